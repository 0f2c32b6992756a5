"""Long pieces by chained continuation: extend any result, part by part, up to 5 minutes.

Each part is a continuation run whose clip is the last `overlap` seconds of the track so far;
the model returns that clip followed by new audio (its `duration` counts both), and only the
new audio is appended, joined by a short equal-power crossfade. A part is filed in the library
the moment it lands and the track is rebuilt from its parts, so a cancel, a failure or a
restart keeps everything done so far, and the chain can be resumed or its last part undone.

The composition is one library entry (`kind="extend"`); its parts are runs inside it
(`kind="part"`, `parent_id` = the entry). `compose` holds the source (the first stretch of
the track), the target length and, for each part, its run, prediction id and time span.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydub import AudioSegment

from services.compose import audio_ops
from services.errors import FieldError, RequestInvalid, StudioError
from services.events import RunUpdate
from services.generation import GenerationService
from services.library import Library, RunNotFound, RunRecord
from services.musicgen import GenerationRequest

MAX_TOTAL_SECONDS = 300
PART_MAX_SECONDS = 30  # one run's coherent window: longer runs drift
DEFAULT_OVERLAP = 5
MAX_OVERLAP = 10
CROSSFADE_SECONDS = 0.08
SOURCE_FILE = "source.wav"


@dataclass(frozen=True)
class ExtendUpdate:
    """A change in a chain: `part` of `parts` is running (its own update), or the chain ended.

    `entry_id` is the composition's library id. On the last update `finished` is set,
    `audio_path` is the whole track and `status` says how it ended (succeeded: the target was
    reached; otherwise the track holds every part that was made).
    """

    entry_id: str
    part: int
    parts: int
    run: RunUpdate | None = None
    finished: bool = False
    status: str = "processing"
    error: str | None = None
    audio_path: str | None = None


def plan_parts(new_seconds: float, overlap: int) -> list[int]:
    """New seconds per part: as few parts as the 30 s window allows, whole seconds each."""
    per_part = PART_MAX_SECONDS - overlap
    count = max(1, math.ceil(new_seconds / per_part))
    base, extra = divmod(math.ceil(new_seconds), count)
    return [base + (1 if i < extra else 0) for i in range(count)]


class Extender:
    """Extends library entries by chained continuation; one instance serves every visitor."""

    def __init__(self, service: GenerationService, library: Library, data_dir: Path):
        self._service = service
        self._library = library
        self._scratch = data_dir / "tmp"

    # -- checks, before anything runs ----------------------------------------------------

    def _check(
        self, record: RunRecord | None, seconds: Any, overlap: Any, track_seconds: float
    ) -> tuple[float, int]:
        errors: list[FieldError] = []
        if record is None or not record.has_audio:
            errors.append(
                FieldError("run_id", "Extend needs a finished take with its audio in your library.")
            )
        resuming = seconds is None and record is not None and record.kind == "extend"
        try:
            new = 0.0 if resuming else float(seconds)
            if not resuming and (not math.isfinite(new) or new < 1):
                raise ValueError
        except (TypeError, ValueError):
            errors.append(
                FieldError(
                    "seconds",
                    "Seconds to add must be a number, at least 1 (leave it empty to resume a "
                    "piece that stopped before its length).",
                )
            )
            new = 0.0
        room = MAX_TOTAL_SECONDS - track_seconds
        if new >= 1 and new > room + 1e-6:
            errors.append(
                FieldError(
                    "seconds",
                    f"A piece can be at most {MAX_TOTAL_SECONDS} s long and this one is already "
                    f"{track_seconds:.1f} s: add at most {max(0, math.floor(room))} s.",
                )
            )
        try:
            lap = int(overlap)
            if lap != float(overlap) or not 1 <= lap <= MAX_OVERLAP:
                raise ValueError
        except (TypeError, ValueError):
            errors.append(
                FieldError(
                    "overlap",
                    f"Overlap must be a whole number of seconds from 1 to {MAX_OVERLAP}: how much "
                    "of the track each part hears before it continues.",
                )
            )
            lap = DEFAULT_OVERLAP
        if errors:
            raise RequestInvalid(errors)
        if track_seconds < lap:
            lap = max(1, math.floor(track_seconds))
        return new, lap

    # -- the chain -------------------------------------------------------------------------

    async def extend(
        self,
        run_id: str,
        seconds: Any,
        *,
        token: str | None,
        owner: str | None,
        prompt: str | None = None,
        overlap: Any = DEFAULT_OVERLAP,
        engine: str | None = None,
        quota_pool: str | None = None,
    ) -> AsyncIterator[ExtendUpdate]:
        """Add `seconds` of new music to entry `run_id` (a take, or a chain to go on with).

        `seconds` None resumes a piece that stopped early: it goes on to its target length.
        `quota_pool` as for `GenerationService.generate` (API callers).
        """
        record = self._library.get(run_id, owner)
        track_seconds = float(record.audio_seconds or 0) if record else 0.0
        new, lap = self._check(record, seconds, overlap, track_seconds)
        assert record is not None
        # The piece is one entry of the history: one click against the visitor's limits.
        self._service.guard(
            GenerationRequest.from_dict(record.request),
            owner,
            engine or record.engine,
            pool=quota_pool,
        )
        entry = record if record.kind == "extend" else self._start_chain(record, owner, prompt)
        # A part that landed after the chain stopped (resumed by the app) is used, not remade.
        track = await asyncio.to_thread(self._adopt_pending, entry, owner)
        entry = self._library.get(entry.id, owner) or entry
        compose = dict(entry.compose or {})
        track_seconds = audio_ops.seconds(track)
        if seconds is None:
            new = max(0.0, float(compose.get("target_seconds") or 0) - track_seconds)
        target = min(MAX_TOTAL_SECONDS, track_seconds + new)
        plan = plan_parts(target - track_seconds, lap) if target - track_seconds > 0.05 else []
        base = GenerationRequest.from_dict(entry.request)
        if prompt is not None and prompt.strip():
            base = base.replace(prompt=prompt.strip())
        compose.update(target_seconds=round(target, 3), overlap=lap, state="running")
        compose["prompt"] = base.prompt
        self._library.update(entry.id, compose=compose, status="processing")
        yield ExtendUpdate(entry.id, 1, max(1, len(plan)))
        status, error = "succeeded", None
        try:
            for index, new_seconds in enumerate(plan, start=1):
                request = self._part_request(base, entry.id, track, lap, new_seconds, index)
                final: RunUpdate | None = None
                # Closed at once on any exit, so that a stopped chain cancels its running part.
                async with contextlib.aclosing(
                    self._service.generate(
                        request,
                        token=token,
                        owner=owner,
                        engine=engine or entry.engine,
                        parent_run_id=entry.id,
                        kind="part",
                        quota_pool=quota_pool,
                    )
                ) as updates:
                    async for update in updates:
                        if final is None and update.run_id:
                            self._note_pending(entry.id, owner, update.run_id, lap)
                        final = update
                        yield ExtendUpdate(entry.id, index, len(plan), run=update)
                if final is None or final.status != "succeeded" or not final.audio_path:
                    status = final.status if final else "failed"
                    error = (final.error if final else None) or "The part did not finish."
                    break
                track = await asyncio.to_thread(self._append, entry.id, owner, final, target)
        except (asyncio.CancelledError, GeneratorExit):
            self._stop(entry.id, owner, "interrupted")
            raise
        except StudioError as err:
            status, error = "failed", str(err)
        done = status == "succeeded"
        self._stop(entry.id, owner, "done" if done else "interrupted")
        # The piece's tempo and key, once, when it has all its parts (or all it will get).
        await asyncio.to_thread(self._service.measure_filed, entry.id)
        current = self._library.get(entry.id, owner)
        path = self._library.audio_file(current) if current else None
        yield ExtendUpdate(
            entry.id,
            max(1, len(plan)),
            max(1, len(plan)),
            finished=True,
            status=status,
            error=None if done else f"Stopped before the target length: {error}",
            audio_path=str(path) if path else None,
        )

    def _start_chain(self, source: RunRecord, owner: str | None, prompt: str | None) -> RunRecord:
        """A new composition whose first stretch is the source take's audio."""
        request = dict(source.request)
        if prompt is not None and prompt.strip():
            request["prompt"] = prompt.strip()
        span = {
            "run_id": source.id,
            "prediction_id": source.prediction_id,
            "start": 0.0,
            "end": round(float(source.audio_seconds or 0), 3),
        }
        entry = self._library.create_pending(
            owner,
            request,
            parent_id=source.id,
            engine=source.engine,
            checkpoint=source.checkpoint,
            kind="extend",
            compose={"source": span, "parts": []},
        )
        folder = self._folder(entry.id)
        audio = self._library.audio_file(source)
        assert audio is not None
        track = audio_ops.load(audio)
        audio_ops.export(track, folder / SOURCE_FILE, "wav")
        self._file_track(entry.id, track)
        self._library.update(entry.id, status="processing")
        return self._library.get(entry.id) or entry

    def _folder(self, entry_id: str) -> Path:
        folder = self._library.compose_dir(entry_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _part_request(
        self,
        base: GenerationRequest,
        entry_id: str,
        track: AudioSegment,
        overlap: int,
        new_seconds: int,
        index: int,
    ) -> GenerationRequest:
        """A continuation of the track's last `overlap` seconds by `new_seconds`."""
        tail = audio_ops.frames(track, audio_ops.seconds(track) - overlap)
        clip = audio_ops.export(tail, self._folder(entry_id) / f"tail-{index}.wav", "wav")
        return base.replace(
            input_audio=str(clip),
            continuation=True,
            continuation_start=0,
            continuation_end=None,
            duration=overlap + new_seconds,
            # Lossless parts: an mp3's encoder delay would shift the joint.
            output_format="wav",
            seed=None,
        )

    def _note_pending(self, entry_id: str, owner: str | None, run_id: str, overlap: int) -> None:
        record = self._library.get(entry_id, owner)
        if record is None:
            return
        compose = dict(record.compose or {})
        compose["pending"] = {"run_id": run_id, "overlap": overlap}
        self._library.update(entry_id, compose=compose)

    def _append(
        self, entry_id: str, owner: str | None, final: RunUpdate, target: float
    ) -> AudioSegment:
        """File a finished part in the composition and return the track with it."""
        record = self._library.get(entry_id, owner)
        if record is None:
            raise RunNotFound(entry_id)
        compose = dict(record.compose or {})
        pending = compose.pop("pending", None) or {}
        part_record = self._library.get(final.run_id or "", owner)
        start = self._track_seconds(record)
        parts = list(compose.get("parts") or [])
        parts.append(
            {
                "run_id": final.run_id,
                "prediction_id": part_record.prediction_id if part_record else None,
                "overlap": int(pending.get("overlap") or compose.get("overlap") or 0),
                "start": round(start, 3),
            }
        )
        track = self._build(record, parts, target)
        parts[-1]["end"] = round(audio_ops.seconds(track), 3)
        compose["parts"] = parts
        self._file_track(entry_id, track)
        self._library.update(entry_id, compose=compose, status="processing")
        return track

    def _adopt_pending(self, entry: RunRecord, owner: str | None) -> AudioSegment:
        """The track, with a part that finished after its chain stopped appended first."""
        compose = entry.compose or {}
        pending = compose.get("pending") or {}
        part = self._library.get(pending.get("run_id") or "", owner) if pending else None
        if part is not None and part.has_audio:
            final = RunUpdate("succeeded", run_id=part.id)
            return self._append(entry.id, owner, final, MAX_TOTAL_SECONDS)
        if pending:
            compose = dict(compose)
            compose.pop("pending", None)
            self._library.update(entry.id, compose=compose)
        current = self._library.get(entry.id, owner)
        audio = self._library.audio_file(current) if current else None
        if audio is None:
            raise StudioError("This piece's audio is missing from the library.")
        return audio_ops.load(audio)

    def _build(
        self, entry: RunRecord, parts: list[dict[str, Any]], target: float | None
    ) -> AudioSegment:
        """The track: the source, then each part's new audio joined at its overlap."""
        track = audio_ops.load(self._library.compose_dir(entry.id) / SOURCE_FILE)
        for part in parts:
            run = self._library.get(part["run_id"])
            audio = self._library.audio_file(run) if run else None
            if audio is None:
                raise StudioError("A part of this piece is missing from the library.")
            output = audio_ops.load(audio)
            # The output repeats the clip it was given (`overlap` s), then goes on: the joint
            # is mixed over the last moments of that repeat.
            lead_in = max(0.0, part["overlap"] - CROSSFADE_SECONDS)
            track = audio_ops.equal_power_join(
                track, audio_ops.frames(output, lead_in), min(CROSSFADE_SECONDS, lead_in)
            )
        if target is not None and audio_ops.seconds(track) > target:
            track = audio_ops.frames(track, 0, target)
        return track

    def _track_seconds(self, record: RunRecord) -> float:
        return float(record.audio_seconds or 0)

    def _file_track(self, entry_id: str, track: AudioSegment) -> None:
        """The track becomes the entry's audio, under a new name each time it changes."""
        version = time.time_ns()
        self._scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self._scratch) as tmp:
            path = audio_ops.export(track, Path(tmp) / "track.wav", "wav")
            self._library.attach_audio(
                entry_id, path, fmt="wav", seconds=audio_ops.seconds(track), version=version
            )

    def _stop(self, entry_id: str, owner: str | None, state: str) -> None:
        """Leave the chain finished ("done") or resumable ("interrupted"); it keeps its audio."""
        with contextlib.suppress(RunNotFound, StudioError):
            record = self._library.get(entry_id, owner)
            if record is None:
                return
            compose = dict(record.compose or {})
            compose["state"] = state
            # The entry's audio is the track so far: it stays a playable, succeeded entry.
            self._library.update(entry_id, compose=compose, status="succeeded")

    # -- undo and restart ------------------------------------------------------------------

    def undo_last(self, entry_id: str, owner: str | None) -> RunRecord:
        """Drop the chain's last part; the track is rebuilt from what is left."""
        record = self._library.get(entry_id, owner)
        if record is None or record.kind != "extend":
            raise StudioError("Only a piece made by Extend has parts to undo.")
        compose = dict(record.compose or {})
        parts = list(compose.get("parts") or [])
        if not parts:
            raise StudioError("This piece has no added part left to undo.")
        parts.pop()
        track = self._build(record, parts, None)
        compose.update(parts=parts, state="interrupted")
        self._file_track(entry_id, track)
        self._library.update(entry_id, compose=compose, status="succeeded")
        updated = self._library.get(entry_id, owner)
        assert updated is not None
        return updated

    def mark_interrupted(self) -> list[str]:
        """On start: chains an earlier process left running become resumable."""
        stopped = []
        for record in self._library.in_flight(kinds=("extend",)):
            self._stop(record.id, None, "interrupted")
            stopped.append(record.id)
        return stopped


def parts_summary(record: RunRecord) -> list[dict[str, Any]]:
    """Each stretch of an extended track: which run made it, its prediction, its time span."""
    compose = record.compose or {}
    spans = []
    source = compose.get("source")
    if source:
        spans.append({**source, "part": 0})
    for index, part in enumerate(compose.get("parts") or [], start=1):
        spans.append(
            {
                "part": index,
                "run_id": part.get("run_id"),
                "prediction_id": part.get("prediction_id"),
                "start": part.get("start"),
                "end": part.get("end"),
            }
        )
    return spans
