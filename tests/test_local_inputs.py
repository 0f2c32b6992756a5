"""Every input of a local take means what it means on Replicate (audiocraft's semantics), on
the tiny checkpoints: guidance 0 and 1, a melody clip's slice, and a melody take that really
hears its melody and its text (transformers before 5.18 silently dropped both: upstream issue
#45647, fixed by PR #48679; requirements-local.txt sets the floor there)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")


from services.engines.local import LocalEngine
from tests.support.audio_files import make_tone
from tests.support.local_engines import tiny_engine, tiny_request
from tests.support.tiny_musicgen import TinyCheckpoints

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def engine(tiny_musicgen: TinyCheckpoints) -> Iterator[LocalEngine]:
    # fp32: int8's dynamic quantization scales each activation tensor by the whole batch, so
    # the unconditional half would differ by a rounding with the conditional half beside it.
    with tiny_engine(tiny_musicgen, preview_seconds=0, max_models=2, precision="fp32") as local:
        yield local


async def take(local: LocalEngine, workdir: Path, **fields: object) -> np.ndarray:
    """The samples of one finished take of a 1 s request with `fields`."""
    request = tiny_request(
        **{"seed": 5, "normalization_strategy": "peak", "output_format": "wav", **fields}
    )
    workdir.mkdir(parents=True)
    run = await local.start(request, workdir=workdir)
    updates = [u async for u in local.follow(run, started=time.monotonic(), workdir=workdir)]
    final = updates[-1]
    assert final.status == "succeeded", final.error
    from pydub import AudioSegment

    clip = AudioSegment.from_file(final.audio_path or "")
    return np.asarray(clip.get_array_of_samples(), dtype=np.float64)


async def test_guidance_zero_is_the_unconditional_model_and_one_the_conditional(
    engine: LocalEngine, tmp_path: Path
) -> None:
    # 0: the prompt is not heard at all (and nothing crashes, as it did before).
    rock = await take(engine, tmp_path / "rock0", prompt="rock drums", classifier_free_guidance=0)
    calm = await take(engine, tmp_path / "calm0", prompt="calm piano", classifier_free_guidance=0)
    assert np.array_equal(rock, calm)
    # 1: the conditional model alone: the prompt is heard, and it is not guidance 3.
    rock1 = await take(engine, tmp_path / "rock1", prompt="rock drums", classifier_free_guidance=1)
    calm1 = await take(engine, tmp_path / "calm1", prompt="calm piano", classifier_free_guidance=1)
    calm3 = await take(engine, tmp_path / "calm3", prompt="calm piano", classifier_free_guidance=3)
    assert not np.allclose(rock1, calm1, atol=1e-3)
    assert not np.allclose(calm1, calm3, atol=1e-3)
    assert not np.allclose(calm1, calm, atol=1e-3)


async def test_a_melody_follows_the_chosen_slice_of_its_clip(
    engine: LocalEngine, tmp_path: Path
) -> None:
    # 1 s of A then 1 s of C: the two halves are different melodies.
    a = make_tone(tmp_path / "a.wav", 1.0, freq=440)
    c = make_tone(tmp_path / "c.wav", 1.0, freq=523)
    from pydub import AudioSegment

    both = tmp_path / "ac.wav"
    (AudioSegment.from_file(a) + AudioSegment.from_file(c)).export(both, format="wav")
    clip = str(both)
    first = await take(engine, tmp_path / "first", input_audio=clip, continuation_end=1)
    again = await take(engine, tmp_path / "again", input_audio=clip, continuation_end=1)
    second = await take(engine, tmp_path / "second", input_audio=clip, continuation_start=1)
    assert np.array_equal(first, again)
    assert not np.allclose(first, second, atol=1e-3)


async def test_a_melody_take_hears_its_melody_and_its_text(
    engine: LocalEngine, tmp_path: Path
) -> None:
    """Fails on transformers < 5.18, which dropped the melody, the text and the guidance."""
    a = str(make_tone(tmp_path / "a.wav", 1.0, freq=440))
    c = str(make_tone(tmp_path / "c.wav", 1.0, freq=523))
    base = await take(engine, tmp_path / "base", input_audio=a, prompt="rock drums")
    other_melody = await take(engine, tmp_path / "melody", input_audio=c, prompt="rock drums")
    other_text = await take(engine, tmp_path / "text", input_audio=a, prompt="calm piano")
    assert not np.allclose(base, other_melody, atol=1e-3)
    assert not np.allclose(base, other_text, atol=1e-3)
