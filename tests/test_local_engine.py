"""The local engine against tiny random-weight MusicGen checkpoints: real transformers code,
real audio files, real threads. Random weights make noise, not music, but every property a
musician notices — length, seeds, continuation, melody, progress, previews, cancel, the queue,
formats, the errors — is the same as with the real checkpoints.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


from services.engines.local import LocalConfig, LocalEngine, local_engine_available
from services.engines.local.download import progress_class
from services.engines.local.normalize import loudness_lufs, normalize
from services.engines.protocol import Engine, EngineRun
from services.events import RunUpdate
from services.library.records import RunRecord
from services.musicgen import GenerationRequest
from tests.support.audio_files import make_tone, samples
from tests.support.local_engines import tiny_engine, tiny_request
from tests.support.tiny_musicgen import TinyCheckpoints

RATE = 32_000
HOP = 640


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def engine(tiny_musicgen: TinyCheckpoints) -> Iterator[LocalEngine]:
    """One engine for the module, configured as MUSICGEN_LOCAL_MODEL=<folder> would be."""
    # Every preview is written (lead 0): a tiny take is done too soon for one to be heard.
    with tiny_engine(tiny_musicgen, preview_seconds=0.5, preview_lead_seconds=0) as local:
        yield local


def request(**kw: object) -> GenerationRequest:
    return tiny_request(**{"seed": 7, "normalization_strategy": "peak", **kw})


async def collect(
    local: LocalEngine, req: GenerationRequest, workdir: Path, *, run: EngineRun | None = None
) -> tuple[EngineRun, list[RunUpdate]]:
    """Start (unless `run` is given) and follow a run to its end."""
    workdir.mkdir(parents=True, exist_ok=True)
    run = run or await local.start(req, workdir=workdir)
    updates = [u async for u in local.follow(run, started=time.monotonic(), workdir=workdir)]
    return run, updates


def logs(updates: list[RunUpdate]) -> list[str]:
    return [line for u in updates for line in u.new_logs]


def test_it_is_an_engine_and_reads_its_settings(engine: LocalEngine) -> None:
    assert isinstance(engine, Engine)
    assert (engine.name, engine.label) == ("local", "This machine")
    assert local_engine_available()
    choices = engine.model_choices()
    assert "facebook/musicgen-stereo-melody-large" in choices
    assert engine.default_model() in choices and engine.config.melody_model in choices
    defaults = LocalConfig.from_env({})
    assert defaults.default_model == "facebook/musicgen-small"
    assert defaults.melody_model == "facebook/musicgen-melody"
    assert defaults.device is None  # auto: CUDA, then MPS, then CPU


async def test_a_one_second_take_lasts_one_second_and_reports_its_seed(
    engine: LocalEngine, tmp_path: Path
) -> None:
    run, updates = await collect(engine, request(seed=None), tmp_path)
    final = updates[-1]
    assert final.status == "succeeded", final.error
    assert (run.engine, run.device) == ("local", "cpu")
    audio, rate, channels = samples(final.audio_path or "")
    assert (rate, channels) == (RATE, 1)
    assert abs(audio.shape[-1] - RATE) <= HOP
    seeds = [line for line in logs(updates) if line.startswith("Using seed ")]
    assert seeds == [f"Using seed {final.seed}"] and final.seed
    assert final.predict_time and final.predict_time > 0
    assert final.realtime_factor == pytest.approx(final.predict_time / (audio.shape[-1] / RATE))
    # Progress rises step by step to the total, which the terminal update repeats.
    done = [u.progress.done for u in updates[:-1] if u.progress]
    assert done == sorted(done) and len(set(done)) == len(done)
    assert final.progress and done[-1] == final.progress.done == final.progress.total
    assert len(done) >= 50  # one per decoding step (50 frames a second)


async def test_same_seed_same_audio_other_seed_other_audio(
    engine: LocalEngine, tmp_path: Path
) -> None:
    finals = []
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        _, updates = await collect(engine, request(seed=seed), tmp_path / name)
        finals.append(samples(updates[-1].audio_path or "")[0])
    assert np.array_equal(finals[0], finals[1])
    assert not np.allclose(finals[0], finals[2], atol=1e-3)


async def test_a_random_seed_run_is_remade_exactly_on_resume(
    engine: LocalEngine, tmp_path: Path
) -> None:
    req = request(seed=-1)
    _, updates = await collect(engine, req, tmp_path / "first")
    first = updates[-1]
    assert first.seed not in (None, 0, -1)
    record_fields = {f.name: None for f in dataclasses.fields(RunRecord)}
    record = RunRecord(**{**record_fields, "request": req.to_dict(), "seed": first.seed})
    resumed = await engine.resume(record, workdir=tmp_path / "again")
    assert resumed is not None
    _, again = await collect(engine, req, tmp_path / "again", run=resumed)
    assert again[-1].seed == first.seed
    assert np.array_equal(
        samples(first.audio_path or "")[0], samples(again[-1].audio_path or "")[0]
    )
    unknown = RunRecord(**{**record_fields, "request": req.to_dict(), "seed": None})
    assert await engine.resume(unknown, workdir=tmp_path / "never") is None


@pytest.mark.parametrize("checkpoint", ["text", "stereo"])
async def test_continuation_begins_with_the_clip_slice(
    engine: LocalEngine, tiny_musicgen: TinyCheckpoints, tmp_path: Path, checkpoint: str
) -> None:
    clip = make_tone(tmp_path / "clip.wav", 3.0, freq=330)
    folder = str(getattr(tiny_musicgen, checkpoint))
    local = engine if checkpoint == "text" else LocalEngine(LocalConfig(default_model=folder))
    req = request(
        input_audio=str(clip),
        continuation=True,
        continuation_start=1,
        continuation_end=2,
        duration=2,
        normalization_strategy="clip",  # leaves the 0.125-amplitude tone as it is
    )
    _, updates = await collect(local, req, tmp_path / "out")
    final = updates[-1]
    assert final.status == "succeeded", final.error
    out, rate, channels = samples(final.audio_path or "")
    assert rate == RATE and channels == (2 if checkpoint == "stereo" else 1)
    assert abs(out.shape[-1] - 2 * RATE) <= HOP
    tone = samples(clip)[0][0, RATE : 2 * RATE]
    head = int(0.95 * RATE)  # the last 20 ms crossfade into the new audio
    for side in out:
        assert np.max(np.abs(side[:head] - tone[:head])) < 2e-3
        assert np.max(np.abs(side[RATE + HOP :])) > 0  # new audio after the slice
    assert not np.allclose(out[0][RATE + HOP :], np.resize(tone, RATE - HOP), atol=0.05)
    if local is not engine:
        local.shutdown()


async def test_a_melody_clip_conditions_the_music(
    engine: LocalEngine, tiny_musicgen: TinyCheckpoints, tmp_path: Path
) -> None:
    a = make_tone(tmp_path / "a.wav", 2.0, freq=440)  # A
    c = make_tone(tmp_path / "c.wav", 2.0, freq=523)  # C
    outs = {}
    for name, clip in (("a", a), ("a2", a), ("c", c), ("none", None)):
        req = request(input_audio=str(clip) if clip else None, seed=3)
        if clip is None:
            req = req.replace(model_version=str(tiny_musicgen.melody))
        run, updates = await collect(engine, req, tmp_path / name)
        assert updates[-1].status == "succeeded", updates[-1].error
        assert run.checkpoint == str(tiny_musicgen.melody)
        if clip is not None:  # the text checkpoint can't follow a melody: said, and switched
            assert any("can't follow a melody" in line for line in logs(updates))
        outs[name] = samples(updates[-1].audio_path or "")[0]
    assert np.array_equal(outs["a"], outs["a2"])
    assert not np.allclose(outs["a"], outs["c"], atol=1e-3)
    assert not np.allclose(outs["a"], outs["none"], atol=1e-3)


async def test_a_melody_model_that_cannot_follow_melodies_says_so(
    tiny_musicgen: TinyCheckpoints, tmp_path: Path
) -> None:
    text = str(tiny_musicgen.text)  # misconfigured: MUSICGEN_LOCAL_MELODY_MODEL=<text model>
    local = LocalEngine(LocalConfig(default_model=text, melody_model=text, device="cpu"))
    clip = make_tone(tmp_path / "a.wav", 1.0)
    try:
        _, updates = await collect(local, request(input_audio=str(clip)), tmp_path / "run")
    finally:
        local.shutdown()
    final = updates[-1]
    assert final.status == "failed" and final.error
    assert "can't follow a melody" in final.error and "MUSICGEN_LOCAL_MELODY_MODEL" in final.error


async def test_cancel_stops_within_a_step_and_files_nothing(
    engine: LocalEngine, tmp_path: Path
) -> None:
    run = await engine.start(request(duration=10), workdir=tmp_path)
    updates: list[RunUpdate] = []
    seen_at_cancel = None
    async for update in engine.follow(run, started=time.monotonic(), workdir=tmp_path):
        updates.append(update)
        if seen_at_cancel is None and update.progress and update.progress.done >= 20:
            seen_at_cancel = update.progress.done
            assert await engine.cancel(run) == "canceled"
    final = updates[-1]
    assert (final.status, final.error, final.audio_path) == ("canceled", "Canceled by you.", None)
    assert final.progress and seen_at_cancel is not None
    # The worker stops at the next step; the few steps it had already reported but this loop
    # hadn't read yet are all the slack there is (503 steps would be the whole run).
    assert final.progress.done - seen_at_cancel <= 5
    assert final.progress.done < final.progress.total
    assert not list(tmp_path.glob("out.*"))
    assert await engine.cancel(run) == "canceled"  # asking again changes nothing


async def test_runs_wait_their_turn_and_see_their_place(
    engine: LocalEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One run per pass here (batching is tests/test_local_batching.py's).
    monkeypatch.setattr(engine, "config", dataclasses.replace(engine.config, max_batch=1))
    runs = [
        await engine.start(request(duration=d), workdir=tmp_path / str(i))
        for i, d in enumerate((2, 1, 1, 1))
    ]
    for i in range(4):
        (tmp_path / str(i)).mkdir(exist_ok=True)
    # The third one is taken out of the queue before it starts: the fourth moves up.
    assert await engine.cancel(runs[2]) == "canceled"
    followed = await asyncio.gather(
        *(collect(engine, request(), tmp_path / str(i), run=r) for i, r in enumerate(runs))
    )
    places = [[u.queue_position for u in ups if u.queue_position] for _, ups in followed]
    statuses = [ups[-1].status for _, ups in followed]
    assert statuses == ["succeeded", "succeeded", "canceled", "succeeded"]
    # Each sees its place count down to its turn (the first may wait on a pass still ending
    # from an earlier test on this shared engine: at most one place then).
    assert len(places[0]) <= 1 and places[1][-1:] == [1] and places[3][-3:] == [3, 2, 1]
    assert places[3][0] == places[1][0] + 2  # the fourth waits two places longer than the second
    assert "Queued (position 1)" in logs(followed[1][1])
    # A queued run shows "starting" until its turn, then "processing".
    first_processing = next(i for i, u in enumerate(followed[1][1]) if u.status == "processing")
    assert all(u.status == "starting" for u in followed[1][1][:first_processing])
    # And it only starts once the run ahead of it has finished: its audio is never earlier.
    a, b = (Path(ups[-1].audio_path or "") for _, ups in (followed[0], followed[1]))
    assert a.stat().st_mtime <= b.stat().st_mtime


def test_what_this_machine_refuses_is_said_by_field(engine: LocalEngine) -> None:
    errors = {
        e.field: e.message
        for e in engine.check(
            request(model_version="musicgen-huge", multi_band_diffusion=True, duration=31)
        )
    }
    assert set(errors) == {"model_version", "multi_band_diffusion", "duration"}
    assert "musicgen-huge" in errors["model_version"]
    assert "facebook/musicgen-small" in errors["model_version"]  # lists the choices
    assert "Replicate" in errors["multi_band_diffusion"]
    assert "30 s" in errors["duration"] and "extend" in errors["duration"]
    # Replicate's short names mean the facebook checkpoints of the same name.
    assert engine.check(request(model_version="stereo-melody-large")) == []
    # A melody clip is fine with any checkpoint (the melody model takes over).
    assert engine.check(request(model_version="facebook/musicgen-small", input_audio="x")) == []


async def test_offline_and_not_downloaded_fails_in_plain_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    local = LocalEngine(LocalConfig(default_model="nobody-here/musicgen-nowhere", device="cpu"))
    try:
        _, updates = await collect(local, request(), tmp_path / "run")
    finally:
        local.shutdown()
    final = updates[-1]
    assert final.status == "failed"
    assert final.error and "nobody-here/musicgen-nowhere" in final.error
    assert "could not be downloaded" in final.error and "Traceback" not in final.error


async def test_previews_stream_the_audio_while_it_is_made(
    engine: LocalEngine, tmp_path: Path
) -> None:
    _, updates = await collect(engine, request(duration=2, normalization_strategy="clip"), tmp_path)
    final = updates[-1]
    assert final.status == "succeeded"
    previews = [(i, u.preview_path) for i, u in enumerate(updates) if u.preview_path]
    assert len(previews) >= 3 and previews[0][0] < len(updates) // 2
    chunks = [samples(path or "")[0] for _, path in previews]
    # The first one is short (the first sound comes early), then 0.5 s each.
    assert chunks[0].shape[-1] <= RATE // 2
    assert all(c.shape[-1] == RATE // 2 for c in chunks[1:])
    # A preview never holds audio of tokens not generated yet, and lags them by a few frames.
    sent = 0
    for (index, _), chunk in zip(previews, chunks, strict=True):
        sent += chunk.shape[-1]
        progress = [u.progress for u in updates[:index] if u.progress][-1]
        frames_so_far = progress.done - 3  # codebook delay: 4 codebooks, 3 steps behind
        assert frames_so_far * HOP - 8 * HOP <= sent <= frames_so_far * HOP
    # And they are the take itself, sample for sample.
    joined = np.concatenate(chunks, axis=-1)
    whole = samples(final.audio_path or "")[0][:, : joined.shape[-1]]
    assert np.array_equal(joined, whole)


async def test_mp3_output_decodes(engine: LocalEngine, tmp_path: Path) -> None:
    _, updates = await collect(engine, request(output_format="mp3"), tmp_path)
    path = Path(updates[-1].audio_path or "")
    assert path.suffix == ".mp3"
    audio, rate, channels = samples(path)
    assert (rate, channels) == (RATE, 1)
    assert abs(audio.shape[-1] / RATE - 1.0) < 0.1  # mp3 adds a few ms of padding
    assert np.max(np.abs(audio)) > 0.1


def test_normalization_strategies_match_audiocraft_levels() -> None:
    t = np.arange(2 * RATE) / RATE
    quiet = (0.05 * np.sin(2 * np.pi * 220 * t))[None].astype(np.float32)
    assert loudness_lufs(normalize(quiet, "loudness", RATE), RATE) == pytest.approx(-14, abs=0.3)
    assert np.max(np.abs(normalize(quiet, "peak", RATE))) == pytest.approx(10 ** (-1 / 20))
    rms = np.sqrt(np.mean(normalize(quiet, "rms", RATE) ** 2))
    assert 20 * np.log10(rms) == pytest.approx(-18, abs=0.01)
    loud = quiet * 40  # 2.0 peak
    assert np.max(np.abs(normalize(loud, "clip", RATE))) == pytest.approx(10 ** (-1 / 20))
    assert np.max(np.abs(normalize(loud, "loudness", RATE))) <= 1.0  # turned down, not clipped


def test_download_progress_becomes_log_lines() -> None:
    lines: list[str] = []
    reporter = progress_class("facebook/musicgen-small", lines.append)
    bar = reporter(total=2_300_000_000, unit="B", unit_scale=True, desc="Downloading bytes")
    bar.update(120_000_000)
    bar.update(2_180_000_000)
    bar.close()
    files = reporter(total=5, desc="Fetching 5 files")  # the file-count bar says nothing
    files.update(5)
    assert lines[0] == "Downloading facebook/musicgen-small: 120 / 2,300 MB"
    assert lines[-1] == "Downloading facebook/musicgen-small: 2,300 / 2,300 MB"
