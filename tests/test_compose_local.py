"""Composing on the local engine: the same features, made on this machine (tiny checkpoints)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.compose import audio_ops
from services.compose.extend import Extender, parts_summary
from services.compose.variations import Variations
from services.engines.local import LocalEngine
from services.generation import GenerationService
from services.library import Library
from tests.support.local_engines import tiny_engine
from tests.support.services import make_service


@pytest.fixture(scope="module")
def local(tiny_musicgen: Any) -> Iterator[LocalEngine]:
    with tiny_engine(tiny_musicgen, preview_seconds=0) as engine:
        yield engine


def service_for(local: LocalEngine, data_dir: Path) -> tuple[GenerationService, Library]:
    library = Library(data_dir)
    return make_service(
        None, data_dir, library=library, local=local, MUSICGEN_ENGINE="local"
    ), library


async def test_extend_on_this_machine(local: LocalEngine, tmp_path: Path) -> None:
    service, library = service_for(local, tmp_path)
    prepared = service.prepare({"prompt": "calm piano", "duration": 2, "seed": 3}, "local").request
    take = [u async for u in service.generate(prepared, token=None, owner=None, engine="local")]
    assert take[-1].status == "succeeded", take[-1].error
    original = audio_ops.samples(audio_ops.load(Path(take[-1].audio_path)))

    updates = [
        u
        async for u in Extender(service, library, tmp_path).extend(
            take[-1].run_id, 3, token=None, owner=None, overlap=1
        )
    ]

    final = updates[-1]
    assert final.status == "succeeded", final.error
    track = audio_ops.load(Path(final.audio_path))
    assert audio_ops.seconds(track) == pytest.approx(5, abs=0.05)
    head = audio_ops.samples(audio_ops.frames(track, 0, 1.9))
    assert np.allclose(head, original[: len(head)], atol=2e-4)
    entry = library.get(final.entry_id)
    assert entry.engine == "local" and [s["part"] for s in parts_summary(entry)] == [0, 1]
    part = library.get(parts_summary(entry)[1]["run_id"])
    assert part.engine == "local" and part.request["continuation"] is True


async def test_variations_on_this_machine_are_made_in_one_pass(
    local: LocalEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, library = service_for(local, tmp_path)
    prepared = service.prepare({"prompt": "calm piano", "duration": 1}, "local").request
    model = local.preload().model
    real_generate = model.generate
    calls: list[int] = []

    def counting_generate(*args: Any, **kwargs: Any) -> Any:
        calls.append(int(kwargs["input_ids"].shape[0]))  # rows of this call
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", counting_generate)

    updates = [
        u async for u in Variations(service, library).run(prepared, 3, token=None, owner=None)
    ]

    assert updates[-1].status == "succeeded", updates[-1].error
    assert calls == [3]  # three takes, one generate call
    takes = Variations(service, library).takes(updates[-1].group_id, None)
    assert len({t.seed for t in takes}) == 3
    sounds = [audio_ops.samples(audio_ops.load(library.audio_file(t))) for t in takes]
    assert not np.allclose(sounds[0], sounds[1])  # three seeds, three different takes
    assert not np.allclose(sounds[1], sounds[2])
    # Nobody waited for the device, and the group keeps how its takes were made.
    assert not any(u.run and u.run.queue_position for u in updates)
    assert library.get(updates[-1].group_id).compose["batch"] == 3
