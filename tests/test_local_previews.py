"""Streamed previews are the take itself: on a non-causal codec (the tiny checkpoints' EnCodec,
like the real 32 kHz one), every previewed sample equals the final take's sample."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch

from services.engines.local import LocalConfig, LocalEngine
from services.engines.local.preview import _ChannelStream, decode_frames
from services.events import RunUpdate
from services.musicgen import GenerationRequest
from tests.support.audio_files import make_tone, samples
from tests.support.tiny_musicgen import TinyCheckpoints

RATE = 32_000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_streamed_decoding_is_the_codecs_own_decoding(tiny_musicgen: TinyCheckpoints) -> None:
    local = LocalEngine(LocalConfig(default_model=str(tiny_musicgen.text), device="cpu"))
    loaded = local.preload()
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
    local = LocalEngine(LocalConfig(default_model=str(folder), device="cpu", preview_seconds=0.5))
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
