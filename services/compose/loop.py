"""Seamless loops for a DAW: a take asked for at a tempo, cut to whole bars on a downbeat.

The model is asked for the loop's length plus about one bar (to find a downbeat in) plus room
for the blend, with the tempo written into the prompt ("..., 120 bpm") as MusicGen loopers do.
The beat grid is found with librosa (the asked tempo as its start), the downbeat is the beat
among the first four with the strongest low-frequency onset, and exactly bars x 4 x 60 / BPM
seconds (to the sample) are cut from it. The audio that follows the cut is blended into the
head with equal-power gains, so the loop point continues the way the music did: no click.

Library: the loop is an entry of kind "loop" (its audio is the loop, always WAV so that its
length stays exact); the raw take is a "loop-source" run inside it (`parent_id`). Built on
`GenerationService.generate`, so it works on every engine; cancelling the consumer of
`LoopMaker.make` cancels the take.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import tempfile
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydub import AudioSegment

from services.compose import audio_ops
from services.errors import FieldError, RequestInvalid, StudioError
from services.events import RunUpdate
from services.generation import GenerationService, PreparedRun
from services.library import Library, RunNotFound, RunRecord
from services.musicgen import GenerationRequest
from services.spending import Ticket

BPM_MIN, BPM_MAX = 40.0, 240.0
BARS_MIN, BARS_MAX = 1, 16
BEATS_PER_BAR = 4  # 4/4 only
# One window of the model: longer takes are stitched from 30 s windows and drift in tempo.
SOURCE_MAX_SECONDS = 30
BLEND_MAX_SECONDS = 0.25
LOW_FMAX_HZ = 200.0  # kick and bass: where a bar's first beat usually stands out
HOP = 512
DOWNBEAT_CANDIDATES = 4
LOOP_FORMAT = "wav"  # lossless and sample-exact: mp3 would pad the ends and break the loop
_BPM_TEXT = re.compile(r"\s*,?\s*\b\d+(?:\.\d+)?\s*bpm\b", re.IGNORECASE)
_CANCELED = "Canceled by you."
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopSpec:
    """What the musician asked for: a tempo and a number of 4/4 bars."""

    bpm: float
    bars: int

    @property
    def beat_seconds(self) -> float:
        return 60.0 / self.bpm

    @property
    def bar_seconds(self) -> float:
        return BEATS_PER_BAR * self.beat_seconds

    @property
    def seconds(self) -> float:
        """The loop's exact length."""
        return self.bars * self.bar_seconds

    @property
    def blend_seconds(self) -> float:
        """How much of the audio after the cut is blended into the head (a quarter beat)."""
        return min(BLEND_MAX_SECONDS, self.beat_seconds / 4)

    @property
    def source_seconds(self) -> int:
        """The take to ask for, whole seconds: the loop, one bar to find a downbeat, the blend."""
        return math.ceil(self.seconds + self.bar_seconds + self.blend_seconds - 1e-9)

    def frames(self, rate: int) -> int:
        """The loop's length in samples at `rate`."""
        return round(self.seconds * rate)

    def label(self) -> str:
        return f"{self.bpm:g}bpm-{self.bars}bars"


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def parse_loop(bpm: Any, bars: Any) -> LoopSpec:
    """The tempo and bars, checked; raises RequestInvalid naming each refused field."""
    errors: list[FieldError] = []
    tempo = _number(bpm)
    if tempo is None or not BPM_MIN <= tempo <= BPM_MAX:
        errors.append(
            FieldError(
                "bpm",
                f"BPM must be a number from {BPM_MIN:g} to {BPM_MAX:g} (you entered {bpm!r}).",
            )
        )
    count = _number(bars)
    if count is None or count != int(count) or not BARS_MIN <= count <= BARS_MAX:
        errors.append(
            FieldError(
                "bars",
                f"Bars must be a whole number from {BARS_MIN} to {BARS_MAX} "
                f"(you entered {bars!r}).",
            )
        )
    if errors:
        raise RequestInvalid(errors)
    assert tempo is not None and count is not None
    spec = LoopSpec(bpm=round(tempo, 3), bars=int(count))
    if spec.source_seconds > SOURCE_MAX_SECONDS:
        raise RequestInvalid(
            [
                FieldError(
                    "bars",
                    f"{spec.bars} bars at {spec.bpm:g} BPM last {spec.seconds:.1f} s; with a bar "
                    f"to find the downbeat the take would be {spec.source_seconds} s, and one "
                    f"take is at most {SOURCE_MAX_SECONDS} s. Use fewer bars or a faster tempo.",
                )
            ]
        )
    return spec


def loop_prompt(prompt: str, bpm: float) -> str:
    """The prompt with the tempo written into it (any tempo it named replaced)."""
    text = _BPM_TEXT.sub("", prompt or "").strip().rstrip(",").strip()
    return f"{text}, {bpm:g} bpm" if text else f"{bpm:g} bpm"


def source_request(request: GenerationRequest, spec: LoopSpec) -> GenerationRequest:
    """The take to ask the model for: the tempo in the prompt, long enough to cut from."""
    prompt = loop_prompt(request.prompt, spec.bpm)
    written = max(0, len(prompt) - len(request.prompt))  # the tempo: the studio's own words
    return request.replace(prompt=prompt, duration=spec.source_seconds, studio_chars=written)


# -- finding the downbeat and cutting ---------------------------------------------------------


@dataclass(frozen=True)
class Downbeat:
    """Where the loop starts (a sample index) and how that was decided, for the logs."""

    frame: int
    beats_found: int
    tempo: float | None
    note: str


def warm_up() -> None:
    """Import the beat tracker ahead of its first use (several seconds on a cold start)."""
    import librosa.beat
    import librosa.onset  # noqa: F401


def _low_onsets(mono: np.ndarray, rate: int) -> np.ndarray:
    """Onset strength of the band below LOW_FMAX_HZ, one value per hop."""
    import librosa  # heavy (numba): loaded only when a loop is cut

    spectrum = np.abs(librosa.stft(mono, n_fft=2048, hop_length=HOP))
    freqs = librosa.fft_frequencies(sr=rate, n_fft=2048)
    low = librosa.amplitude_to_db(spectrum[freqs <= LOW_FMAX_HZ] + 1e-10, ref=np.max)
    return np.asarray(librosa.onset.onset_strength(S=low, sr=rate, hop_length=HOP))


def find_downbeat(mono: np.ndarray, rate: int, spec: LoopSpec, needed: int) -> Downbeat:
    """The loop's first sample: among the first four beats that leave `needed` samples after
    them, the one with the strongest low-frequency onset; else the first onset, else 0."""
    import librosa

    total = len(mono)

    def fits(frame: int) -> bool:
        return frame + needed <= total

    y = mono.astype(np.float32)
    tempo_found, beats = librosa.beat.beat_track(
        y=y, sr=rate, hop_length=HOP, start_bpm=spec.bpm, units="frames"
    )
    tempo = float(np.atleast_1d(tempo_found)[0]) if np.size(tempo_found) else None
    beat_frames = [int(b) for b in np.atleast_1d(beats)]
    if beat_frames:
        strength = _low_onsets(y, rate)
        candidates = [b for b in beat_frames[:DOWNBEAT_CANDIDATES] if fits(b * HOP)]
        if candidates:

            def punch(b: int) -> float:
                window = strength[max(0, b - 2) : b + 3]
                return float(window.max()) if window.size else 0.0

            best = max(candidates, key=punch)
            which = beat_frames.index(best) + 1
            return Downbeat(
                best * HOP,
                len(beat_frames),
                tempo,
                f"Beat grid: {len(beat_frames)} beats found (about {tempo or 0:.0f} BPM); the "
                f"loop starts on beat {which} at {best * HOP / rate:.3f} s, the strongest low "
                "onset among the first four.",
            )
    onsets = librosa.onset.onset_detect(y=y, sr=rate, hop_length=HOP, units="samples")
    first = next((int(o) for o in np.atleast_1d(onsets) if fits(int(o))), None)
    if first is not None:
        return Downbeat(
            first,
            len(beat_frames),
            tempo,
            f"No usable beats were found; the loop starts on the first onset at "
            f"{first / rate:.3f} s.",
        )
    return Downbeat(
        0, len(beat_frames), tempo, "No beats or onsets were found; the loop starts at 0 s."
    )


def blend_into_head(body: AudioSegment, following: AudioSegment) -> AudioSegment:
    """`body` whose head is crossfaded (equal power) from `following`, the audio that came
    after it: the loop's end then runs on into its start the way the music itself did."""
    n = int(min(following.frame_count(), body.frame_count()))
    if n <= 0:
        return body
    head, tail = audio_ops.samples(body), audio_ops.samples(audio_ops.matched(following, body))
    t = (np.arange(n) + 0.5) / n
    fade_in = np.sin(t * np.pi / 2)[:, None]
    fade_out = np.cos(t * np.pi / 2)[:, None]
    mixed = head.copy()
    mixed[:n] = tail[:n] * fade_out + head[:n] * fade_in
    return audio_ops.from_samples(mixed, body)


@dataclass(frozen=True)
class CutLoop:
    path: Path
    frames: int
    rate: int
    downbeat: Downbeat


def cut_loop(source: Path, spec: LoopSpec, dest: Path) -> CutLoop:
    """Find the downbeat in `source`, cut the loop, blend its wrap-around, write WAV `dest`."""
    take = audio_ops.load(source)
    rate = take.frame_rate
    frames = spec.frames(rate)
    blend = max(1, round(spec.blend_seconds * rate))
    if take.frame_count() < frames + blend:
        raise StudioError(
            f"The take is {audio_ops.seconds(take):.2f} s long: too short to cut a "
            f"{spec.seconds:.2f} s loop from."
        )
    mono = audio_ops.samples(take).mean(axis=1)
    downbeat = find_downbeat(mono, rate, spec, frames + blend)
    if not downbeat.note.startswith("Beat grid"):
        log.warning("Loop from %s: %s", source.name, downbeat.note)
    start = downbeat.frame
    body = take.get_sample_slice(start, start + frames)
    following = take.get_sample_slice(start + frames, start + frames + blend)
    loop = blend_into_head(body, following)
    audio_ops.export(loop, dest, LOOP_FORMAT)
    return CutLoop(dest, int(loop.frame_count()), rate, downbeat)


# -- the loop as a library entry, made step by step ---------------------------------------------


class LoopMaker:
    """Makes loops for any number of visitors at once; holds no per-visitor state."""

    def __init__(self, service: GenerationService, library: Library):
        self._service = service
        self._library = library

    def prepare(
        self, raw: dict[str, Any], bpm: Any, bars: Any, engine: str | None = None
    ) -> tuple[GenerationRequest, LoopSpec]:
        """Check the form's values and the loop's; raises RequestInvalid naming every field.

        `raw["duration"]` is ignored: the loop's take is as long as its bars need.
        """
        errors: list[FieldError] = []
        spec: LoopSpec | None = None
        try:
            spec = parse_loop(bpm, bars)
        except RequestInvalid as err:
            errors.extend(err.errors)
        values = dict(raw)
        values["duration"] = spec.source_seconds if spec else SOURCE_MAX_SECONDS
        # The musician's own words are held to the prompt's limit; the tempo the loop writes
        # into it (`make`) is not theirs to count.
        words = _BPM_TEXT.sub("", str(values.get("prompt") or "")).strip()
        values["prompt"] = words or (loop_prompt("", spec.bpm) if spec else "")
        try:
            request = self._service.prepare(values, engine).request
        except RequestInvalid as err:
            errors.extend(err.errors)
        if errors:
            raise RequestInvalid(errors)
        assert spec is not None
        return request, spec

    async def make(
        self,
        request: GenerationRequest,
        spec: LoopSpec,
        *,
        token: str | None,
        owner: str | None,
        engine: str | None = None,
        payer: str | None = None,
    ) -> AsyncGenerator[RunUpdate, None]:
        """Make the take, cut the loop and file both; an update for every change.

        Updates carry the loop entry's id as `run_id`; the last is terminal, its `audio_path`
        the filed loop. Refusals are raised before anything is stored or sent; the take is
        held to the spending caps of `payer` before the loop is filed.
        """
        take = source_request(request, spec)
        started = time.monotonic()
        # Refusals come before the loop is filed: no engine here (no token), the engine's
        # rules (checked on the musician's prompt: the tempo written into it is the loop's),
        # the visitor's limits (the loop is one entry of the history, like a take).
        chosen = self._service.engines.open(engine, token)
        try:
            own = request.replace(
                duration=spec.source_seconds, prompt=request.prompt or take.prompt
            )
            prepared = await asyncio.to_thread(self._service.prepare_request, own, chosen.name)
            prepared = replace(prepared, request=take)
        finally:
            await chosen.aclose()
        with self._service.reserve([take], owner, chosen.name, payer=payer) as ticket:
            async for update in self._make(prepared, spec, started, token, owner, engine, ticket):
                yield update

    async def _make(
        self,
        prepared: PreparedRun,
        spec: LoopSpec,
        started: float,
        token: str | None,
        owner: str | None,
        engine: str | None,
        ticket: Ticket,
    ) -> AsyncGenerator[RunUpdate, None]:
        """The loop after its checks: see `make`."""
        take = prepared.request
        # librosa takes seconds to import the first time: do it while the model works.
        warming = asyncio.ensure_future(asyncio.to_thread(warm_up))
        warming.add_done_callback(lambda f: f.cancelled() or f.exception())
        compose: dict[str, Any] = {"bpm": spec.bpm, "bars": spec.bars, "source_run": None}
        loop = self._library.create_pending(owner, take.to_dict(), kind="loop", compose=compose)
        self._service.watch_entry(loop.id, owner)
        try:
            updates = self._service.generate(
                prepared,
                token=token,
                owner=owner,
                engine=engine,
                parent_run_id=loop.id,
                kind="loop-source",
                ticket=ticket,
            )
            last: RunUpdate | None = None
            status = "pending"
            try:
                async for update in updates:
                    if last is None and update.run_id:
                        self._service.link_part(loop.id, update.run_id)
                        compose["source_run"] = update.run_id
                        self._library.update(loop.id, compose=compose)
                    last = update
                    if update.finished or update.status == "lost":
                        continue
                    if update.status in ("starting", "processing") and update.status != status:
                        status = update.status
                        self._library.update(loop.id, status=status)
                    yield replace(update, run_id=loop.id, audio_path=None)
            except (asyncio.CancelledError, GeneratorExit):
                with contextlib.suppress(BaseException):
                    await updates.aclose()  # the service then cancels the take if it still runs
                self._settle(loop.id, "canceled", _CANCELED)
                raise
            except StudioError:
                if last is None:  # refused before anything was stored or sent
                    self._library.delete(loop.id, owner)
                else:
                    self._settle(loop.id, "failed", "The loop's take failed.")
                raise
            if last is None or not last.finished or last.status != "succeeded":
                final = last or RunUpdate("failed", error="The take ended without news.")
                status = (
                    final.status
                    if final.status in ("failed", "canceled", "aborted", "lost")
                    else "failed"
                )
                error = final.error or "The loop's take did not succeed."
                self._settle(loop.id, status, error)
                yield replace(
                    final,
                    status=status,
                    error=error,
                    run_id=loop.id,
                    audio_path=None,
                    elapsed=time.monotonic() - started,
                )
                return
            try:
                yield RunUpdate(
                    "processing",
                    prediction_id=last.prediction_id,
                    seed=last.seed,
                    run_id=loop.id,
                    elapsed=time.monotonic() - started,
                    new_logs=(f"Cutting {spec.bars} bar(s) at {spec.bpm:g} BPM from the take…",),
                )
                final = await self._finish(loop.id, last, spec, started)
            except (asyncio.CancelledError, GeneratorExit):
                self._settle(loop.id, "canceled", _CANCELED)
                raise
            self._service.entry_ended(loop.id, final.status, final.error)
            yield final
        finally:
            self._service.entry_dropped(loop.id)

    async def _finish(
        self, loop_id: str, take: RunUpdate, spec: LoopSpec, started: float
    ) -> RunUpdate:
        """Cut the loop from the filed take and file it as the loop entry's audio."""
        source = self._library.get(take.run_id) if take.run_id else None
        try:
            record = await asyncio.to_thread(self.file_loop, loop_id, source, spec)
        except StudioError as err:
            self._settle(loop_id, "failed", str(err))
            return RunUpdate(
                "failed",
                prediction_id=take.prediction_id,
                run_id=loop_id,
                error=str(err),
                elapsed=time.monotonic() - started,
            )
        path = self._library.audio_file(record)
        return RunUpdate(
            "succeeded",
            prediction_id=take.prediction_id,
            seed=take.seed,
            run_id=loop_id,
            audio_path=str(path) if path else None,
            elapsed=time.monotonic() - started,
            predict_time=take.predict_time,
            new_logs=tuple((record.compose or {}).get("notes") or ()),
        )

    def file_loop(self, loop_id: str, source: RunRecord | None, spec: LoopSpec) -> RunRecord:
        """Cut the loop from `source` (the filed take) and attach it to the loop entry."""
        audio = self._library.audio_file(source) if source else None
        if source is None or audio is None:
            raise StudioError("The loop's take has no audio to cut from.")
        scratch = self._library.data_dir / "tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=scratch) as tmp:
            try:
                cut = cut_loop(audio, spec, Path(tmp) / f"loop.{LOOP_FORMAT}")
            except StudioError:
                raise
            except Exception as err:  # a decoder or analysis failure: say what happened
                raise StudioError(f"The loop could not be cut from the take: {err}") from err
            notes = [
                cut.downbeat.note,
                f"Loop: {cut.frames} samples at {cut.rate} Hz = {cut.frames / cut.rate:.3f} s "
                f"({spec.bars} bar(s) of 4/4 at {spec.bpm:g} BPM), the wrap-around blended over "
                f"{spec.blend_seconds * 1000:.0f} ms.",
            ]
            if (audio.suffix.lstrip(".").lower()) != LOOP_FORMAT:
                notes.append(
                    f"The loop is kept as {LOOP_FORMAT.upper()} (sample-exact); it downloads as "
                    "mp3 or flac too."
                )
            compose = {
                "bpm": spec.bpm,
                "bars": spec.bars,
                "source_run": source.id,
                "downbeat_seconds": round(cut.downbeat.frame / cut.rate, 6),
                "beats_found": cut.downbeat.beats_found,
                "frames": cut.frames,
                "sample_rate": cut.rate,
                "notes": notes,
            }
            self._library.update(
                loop_id,
                compose=compose,
                seed=source.seed,
                engine=source.engine,
                checkpoint=source.checkpoint,
                device=source.device,
                predict_time=source.predict_time,
                logs_tail="\n".join(notes),
            )
            filed = self._library.attach_audio(
                loop_id, cut.path, fmt=LOOP_FORMAT, seconds=cut.frames / cut.rate
            )
        self._service.measure_filed(loop_id)  # the measured tempo, beside the one asked for
        return self._library.get(loop_id) or filed

    def _settle(self, loop_id: str, status: str, error: str) -> None:
        with contextlib.suppress(RunNotFound):
            self._library.update(loop_id, status=status, error=error)
        self._service.entry_ended(loop_id, status, error)

    def settle_left_over(self) -> list[str]:
        """Loops an earlier process left unfinished: cut those whose take is filed, record
        those whose take ended otherwise; a take still in flight is left to its resume."""
        settled: list[str] = []
        for loop in self._library.in_flight(kinds=("loop",)):
            sources = [r for r in self._library.children(loop.id) if r.kind == "loop-source"]
            source = sources[-1] if sources else None
            if source is not None and source.in_flight:
                continue
            compose = loop.compose or {}
            try:
                spec = LoopSpec(float(compose["bpm"]), int(compose["bars"]))
                if source is None:
                    raise StudioError("The app stopped before this loop's take was started.")
                if source.status != "succeeded":
                    raise StudioError(source.error or f"The loop's take {source.status}.")
                self.file_loop(loop.id, source, spec)
            except (StudioError, KeyError, ValueError) as err:
                self._settle(loop.id, "failed", str(err))
            settled.append(loop.id)
        return settled


def loop_summary(
    service: GenerationService, library: Library, loop_id: str, owner: str | None
) -> dict[str, Any]:
    """The JSON record of a loop: the run summary plus its bpm, bars and source take."""
    summary = service.summary(loop_id, owner)
    record = library.get(loop_id, owner)
    compose = dict((record.compose if record else None) or {})
    compose.pop("notes", None)
    summary.update(
        kind="loop",
        compose=compose,
        # `bpm` is the tempo asked for (the loop is cut to it); `measured_bpm` what was heard.
        measured_bpm=summary.get("bpm"),
        bpm=compose.get("bpm"),
        bars=compose.get("bars"),
        source_run=compose.get("source_run"),
    )
    return summary
