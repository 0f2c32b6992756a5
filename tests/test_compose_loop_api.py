"""The `/loop` endpoint through gradio_client, against `python app.py` and the emulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client

from services.compose import audio_ops
from services.library import Library
from tests.browser_support import (
    MODEL_INPUTS,
    AppProcess,
    creates,
    parameter_names,
)
from tests.emulator import Emulator


def test_loop_is_exact_seamless_named_and_survives_a_restart(
    app: AppProcess, module_emulator: Emulator
) -> None:
    client = Client(app.url, verbose=False)
    assert parameter_names(client, "/loop") == [*MODEL_INPUTS, "engine", "bpm", "bars"]

    before = len(creates(module_emulator))
    audio, record = client.predict(
        prompt="Lo-fi piano with rain",
        seed=1234,
        model_version="stereo-large",
        bpm=120,
        bars=2,
        api_name="/loop",
    )
    assert record["status"] == "succeeded", record
    sent = creates(module_emulator)[before:]
    assert len(sent) == 1
    assert sent[0]["input"]["prompt"] == "Lo-fi piano with rain, 120 bpm"
    assert sent[0]["input"]["duration"] == 7

    path = Path(audio)
    assert path.suffix == ".wav"
    assert "120bpm-2bars" in path.name and "seed1234" in path.name, path.name
    loop = audio_ops.load(path)
    assert loop.frame_count() == 4 * loop.frame_rate  # exactly 4.000 s, to the sample
    samples = audio_ops.samples(loop)
    wrap = float(np.abs(samples[-1] - samples[0]).max())
    inside = float(np.abs(np.diff(samples, axis=0)).max())
    assert wrap <= inside, f"the loop point clicks: {wrap} > {inside}"

    assert record["kind"] == "loop"
    assert record["bpm"] == 120 and record["bars"] == 2
    assert record["compose"]["bpm"] == 120 and record["compose"]["bars"] == 2
    assert record["compose"]["source_run"] == record["source_run"]
    assert record["file_name"] == path.name
    assert record["audio_seconds"] == pytest.approx(4.0, abs=1e-9)
    assert record["seed"] == 1234

    app.restart()
    library = Library(app.data_dir)
    listed = [r for r in library.list(None, per_page=100).items if r.kind == "loop"]
    assert [r.id for r in listed] == [record["library_id"]]  # in the history once
    inside_it = library.children(record["library_id"])
    assert [(r.kind, r.id, r.status) for r in inside_it] == [
        ("loop-source", record["source_run"], "succeeded")
    ]
    assert record["source_run"] not in [r.id for r in library.list(None, per_page=100).items]
    assert library.audio_file(listed[0]).is_file()


@pytest.mark.parametrize(
    ("bpm", "bars", "field"),
    [(300, 2, "bpm"), (120, 0, "bars"), (40, 16, "bars")],
)
def test_a_refused_loop_names_the_field_and_sends_nothing(
    app: AppProcess, module_emulator: Emulator, bpm: float, bars: float, field: str
) -> None:
    client = Client(app.url, verbose=False)
    before = module_emulator.creates
    with pytest.raises(Exception, match=f"{field}: ") as refused:
        client.predict(prompt="drums", bpm=bpm, bars=bars, api_name="/loop")
    assert "Nothing was sent" in str(refused.value)
    assert module_emulator.creates == before
