"""Streamed previews are the take itself: on a non-causal codec (the tiny checkpoints' EnCodec,
like the real 32 kHz one), every previewed sample equals the final take's sample. And a preview
is written only when it can be heard before the take is done (the pace of decoding steps is
measured on a clock the tests drive: one step, one tick)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch

from services.engines.local import LocalConfig, LocalEngine
from services.engines.local.audio_io import write_audio
from services.engines.local.loader import LoadedModel
from services.engines.local.preview import _ChannelStream, decode_frames
from services.engines.local.synth import Hooks, Row, synthesize, synthesize_batch
from services.events import RunUpdate
from services.musicgen import GenerationRequest
from tests.support.audio_files import make_tone, samples
from tests.support.tiny_musicgen import TinyCheckpoints

RATE = 32_000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def loaded(tiny_musicgen: TinyCheckpoints) -> Iterator[LoadedModel]:
    """The tiny text checkpoint, loaded once for the module."""
    local = LocalEngine(LocalConfig(default_model=str(tiny_musicgen.text), device="cpu"))
    try:
        yield local.preload()
    finally:
        local.shutdown()


def test_streamed_decoding_is_the_codecs_own_decoding(loaded: LoadedModel) -> None:
    codec = loaded.model.audio_encoder
    assert codec.config.use_causal_conv is False  # each sample depends on frames after it
    codes = torch.randint(0, codec.config.codebook_size, (4, 120), generator=torch.manual_seed(3))
    stream = _ChannelStream(codec)
    with torch.inference_mode():
        pieces = [stream.advance(codes[:, :upto], final=False) for upto in (13, 40, 41, 90)]
        pieces.append(stream.advance(codes, final=True))
    streamed = torch.cat([p for p in pieces if p is not None], dim=-1).numpy()
    whole = decode_frames(loaded, codes)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


async def _previews_and_take(
    folder: Path, req: GenerationRequest, workdir: Path
) -> tuple[list[np.ndarray], np.ndarray]:
    config = LocalConfig(
        default_model=str(folder), device="cpu", preview_seconds=0.5, preview_lead_seconds=0
    )
    local = LocalEngine(config)
    try:
        run = await local.start(req, workdir=workdir)
        updates: list[RunUpdate] = [
            u async for u in local.follow(run, started=time.monotonic(), workdir=workdir)
        ]
    finally:
        local.shutdown()
    assert updates[-1].status == "succeeded", updates[-1].error
    chunks = [samples(u.preview_path)[0] for u in updates if u.preview_path]
    return chunks, samples(updates[-1].audio_path or "")[0]


async def test_stereo_previews_are_the_final_samples(
    tiny_musicgen: TinyCheckpoints, tmp_path: Path
) -> None:
    req = GenerationRequest(
        prompt="rock", duration=2, model_version="", seed=4, normalization_strategy="clip"
    )
    chunks, take = await _previews_and_take(tiny_musicgen.stereo, req, tmp_path)
    assert len(chunks) >= 3 and chunks[0].shape[-1] <= RATE // 4  # the first sound comes early
    joined = np.concatenate(chunks, axis=-1)
    assert np.array_equal(joined, take[:, : joined.shape[-1]])


async def test_continuation_previews_are_the_final_samples(
    tiny_musicgen: TinyCheckpoints, tmp_path: Path
) -> None:
    clip = make_tone(tmp_path / "clip.wav", 3.0, freq=330)
    req = GenerationRequest(
        prompt="calm piano",
        duration=2,
        model_version="",
        seed=4,
        input_audio=str(clip),
        continuation=True,
        continuation_start=1,
        continuation_end=2,
        normalization_strategy="clip",
    )
    (tmp_path / "run").mkdir()
    chunks, take = await _previews_and_take(tiny_musicgen.text, req, tmp_path / "run")
    joined = np.concatenate(chunks, axis=-1)
    # The previews start with the musician's own clip and cross into the new audio as the
    # take does, sample for sample.
    assert joined.shape[-1] > RATE
    assert np.array_equal(joined, take[:, : joined.shape[-1]])
    tone = samples(clip)[0][:, RATE : 2 * RATE]
    assert np.max(np.abs(joined[:, : RATE // 2] - tone[:, : RATE // 2])) < 2e-3


class Pace:
    """The clock of a take whose decoding steps each last `per_step` seconds: the take's own
    progress (called every step, before the previews) moves it."""

    def __init__(self, per_step: float) -> None:
        self.per_step = per_step
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Take:
    """What a musician gets of one take: each preview with the time it came, and the take."""

    previews: list[tuple[float, np.ndarray]]
    audio: np.ndarray
    ended: float  # the clock when the last decoding step was done


def _no_log(line: str) -> None:
    """The tests read previews and audio, not log lines."""


def _hooks(pace: Pace, heard: list[tuple[float, Path]], *, drives: bool = True) -> Hooks:
    """Hooks that note each preview's time; `drives`: this row's progress moves the clock."""

    def preview(path: Path) -> None:
        heard.append((pace.now, path))

    def progress(done: int, steps: int) -> None:
        if drives:
            pace.now = done * pace.per_step

    return Hooks(progress, preview, _no_log, threading.Event())


def make(loaded: LoadedModel, workdir: Path, *, per_step: float, lead: float) -> Take:
    """A 2 s take (seed 4) whose decoding steps last `per_step` s, previews 0.5 s each."""
    workdir.mkdir(parents=True)
    pace = Pace(per_step)
    heard: list[tuple[float, Path]] = []
    req = GenerationRequest(
        prompt="calm piano", duration=2, model_version="", seed=4, normalization_strategy="clip"
    )
    result = synthesize(
        loaded,
        req,
        seed=4,
        workdir=workdir,
        hooks=_hooks(pace, heard),
        preview_seconds=0.5,
        preview_lead_seconds=lead,
        clock=pace,
    )
    # Read back as the page gets them: 16-bit wav files.
    take = write_audio(result.samples, workdir / "take.wav", sampling_rate=RATE, fmt="wav")
    return Take([(at, samples(path)[0]) for at, path in heard], samples(take)[0], pace.now)


@pytest.fixture(scope="module")
def every_preview(loaded: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Take:
    """A slow take (0.1 s a step, about 10 s) with every preview written (lead 0)."""
    return make(loaded, tmp_path_factory.mktemp("lead0") / "run", per_step=0.1, lead=0)


@pytest.fixture(scope="module")
def slow(loaded: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Take:
    """The same take with previews only while its end is at least 1 s away."""
    return make(loaded, tmp_path_factory.mktemp("lead1") / "run", per_step=0.1, lead=1.0)


def same_take(a: np.ndarray, b: np.ndarray) -> bool:
    """The same take's 16-bit audio: the codec's float sums, split at other points, may round
    a few samples one step apart."""
    return a.shape == b.shape and bool(np.abs(a - b).max() <= 1.5 / 32767)


def joined(take: Take) -> np.ndarray:
    return np.concatenate([audio for _, audio in take.previews], axis=-1)


def test_a_slow_take_previews_only_what_plays_before_it_is_done(slow: Take) -> None:
    assert len(slow.previews) >= 2
    assert slow.previews[0][1].shape[-1] <= RATE // 2  # the first sound still comes early
    for at, _ in slow.previews:
        assert slow.ended - at >= 1.0 - 1e-9  # at least a second to hear it
    previewed = joined(slow)
    assert np.array_equal(previewed, slow.audio[:, : previewed.shape[-1]])


def test_a_fast_take_writes_no_previews_and_is_the_same_take(
    loaded: LoadedModel, every_preview: Take, tmp_path: Path
) -> None:
    fast = make(loaded, tmp_path / "run", per_step=0.001, lead=1.0)  # about 0.1 s in all
    assert fast.previews == [] and not list((tmp_path / "run").glob("preview-*"))
    assert every_preview.previews  # the same take, slower, had its previews
    assert same_take(fast.audio, every_preview.audio)


def test_the_last_pieces_are_skipped_once_the_take_is_nearly_done(
    slow: Take, every_preview: Take
) -> None:
    assert len(slow.previews) < len(every_preview.previews)
    # The pieces written are the same first pieces, sample for sample; the rest came only with
    # the take, and the take is the same.
    for (_, gated), (_, full) in zip(slow.previews, every_preview.previews, strict=False):
        assert np.array_equal(gated, full)
    assert every_preview.ended - every_preview.previews[-1][0] < 1.0
    assert same_take(slow.audio, every_preview.audio)


def test_a_batch_row_previews_until_the_whole_pass_is_nearly_done(
    loaded: LoadedModel, tmp_path: Path
) -> None:
    # A 1 s take beside a 2 s one is done when the pass is: its pieces are judged against the
    # pass's end, so its last one still comes (alone it would skip it: 1 s before its end).
    pace = Pace(0.1)
    heard: dict[int, list[tuple[float, Path]]] = {1: [], 2: []}
    rows = []
    for seconds in (1, 2):
        workdir = tmp_path / str(seconds)
        workdir.mkdir()
        req = GenerationRequest(
            prompt="calm piano", duration=seconds, model_version="", normalization_strategy="clip"
        )
        rows.append(Row(req, 4, workdir, _hooks(pace, heard[seconds], drives=seconds == 2)))
    results = synthesize_batch(
        loaded, rows, preview_seconds=0.5, preview_lead_seconds=1.5, clock=pace
    )
    assert not any(isinstance(r, Exception) for r in results)
    short_done = (loaded.frame_rate + loaded.channel_codebooks - 1) * 0.1  # its own steps
    assert heard[1] and heard[1][-1][0] > short_done - 1.5  # within the lead of its own end
    for at, _ in heard[1] + heard[2]:
        assert pace.now - at >= 1.5 - 1e-9  # yet the lead before the pass's end
