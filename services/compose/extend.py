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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydub import AudioSegment

from services.compose import audio_ops
from services.errors import FieldError, RequestInvalid, StudioError
from services.events import RunUpdate
from services.generation import GenerationService
from services.library import Library, RunNotFound, RunRecord
from services.musicgen import GenerationRequest
from services.spending import Ticket

MAX_TOTAL_SECONDS = 300
PART_MAX_SECONDS = 30  # one run's coherent window: longer runs drift
DEFAULT_OVERLAP = 5
MAX_OVERLAP = 10
CROSSFADE_SECONDS = 0.08
SOURCE_FILE = "source.wav"
# Entries made of chained parts: a piece made by Extend, a song made by Arrange.
CHAIN_KINDS = ("extend", "song")


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
    section: int | None = None  # a song's section (0-based) the part belongs to


@dataclass(frozen=True)
class Step:
    """One run of a chain: `new_seconds` of music after `overlap` s of the track so far.

    `overlap` 0 is a plain take (a song's opening). `end` is the track's length once the part
    is appended (a longer output is trimmed to it); `prompt` None keeps the chain's own.
    """

    new_seconds: int
    overlap: int
    end: float
    prompt: str | None = None
    section: int | None = None

    @property
    def duration(self) -> int:
        """The run's `duration`: the model's output repeats the clip, then goes on."""
        return self.overlap + self.new_seconds


def overlap_error(overlap: Any) -> FieldError | None:
    """Why `overlap` is refused (None: a whole number of seconds from 1 to MAX_OVERLAP)."""
    try:
        lap = int(overlap)
        if lap != float(overlap) or not 1 <= lap <= MAX_OVERLAP:
            raise ValueError
    except (TypeError, ValueError):
        return FieldError(
            "overlap",
            f"Overlap must be a whole number of seconds from 1 to {MAX_OVERLAP}: how much "
            "of the track each part hears before it continues.",
        )
    return None


@dataclass(frozen=True)
class Caller:
    """Who a chain's runs are made for, and how: passed to every part's generation."""

    token: str | None
    owner: str | None
    engine: str | None
    ticket: Ticket | None = None  # the composition's runs, held to the caps before the first


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
        refused = overlap_error(overlap)
        if refused is not None:
            errors.append(refused)
        lap = DEFAULT_OVERLAP if refused is not None else int(overlap)
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
        payer: str | None = None,
    ) -> AsyncIterator[ExtendUpdate]:
        """Add `seconds` of new music to entry `run_id` (a take, or a chain to go on with).

        `seconds` None resumes a piece that stopped early: it goes on to its target length.
        Refusals (the fields, the new prompt, the spending caps of `payer` for every part)
        come before anything is stored, written or sent.
        """
        record = self._library.get(run_id, owner)
        track_seconds = float(record.audio_seconds or 0) if record else 0.0
        new, lap = self._check(record, seconds, overlap, track_seconds)
        assert record is not None
        base = GenerationRequest.from_dict(record.request)
        if prompt is not None and prompt.strip():
            base = base.replace(prompt=prompt.strip())  # RequestInvalid past the limit
        if seconds is None:
            new = float((record.compose or {}).get("target_seconds") or 0) - track_seconds
        new = min(new, MAX_TOTAL_SECONDS - track_seconds)
        planned = plan_parts(new, lap) if new > 0.05 else []
        # An engine that cannot run here (no token) is refused before the piece is filed.
        chosen = self._service.engines.open(engine or record.engine, token)
        await chosen.aclose()
        # Every part is held to the caps before the first starts; they run one at a time.
        runs = [base.replace(duration=lap + part) for part in planned]
        with self._service.reserve(runs, owner, chosen.name, payer=payer) as ticket:
            caller = Caller(token, owner, engine, ticket)
            async for update in self._extend_chain(record, seconds, new, lap, prompt, caller):
                yield update

    async def _extend_chain(
        self,
        record: RunRecord,
        seconds: Any,
        new: float,
        lap: int,
        prompt: str | None,
        caller: Caller,
    ) -> AsyncIterator[ExtendUpdate]:
        """The piece's parts after its checks: see `extend`."""
        owner = caller.owner
        entry = record if record.kind == "extend" else self._start_chain(record, owner, prompt)
        # A part that landed after the chain stopped (resumed by the app) is used, not remade.
        track = await asyncio.to_thread(self._adopt_pending, entry, owner)
        entry = self._library.get(entry.id, owner) or entry
        compose = dict(entry.compose or {})
        assert track is not None  # a piece always has its source
        track_seconds = audio_ops.seconds(track)
        if seconds is None:
            new = max(0.0, float(compose.get("target_seconds") or 0) - track_seconds)
        target = min(MAX_TOTAL_SECONDS, track_seconds + new)
        plan = plan_parts(target - track_seconds, lap) if target - track_seconds > 0.05 else []
        base = GenerationRequest.from_dict(entry.request)
        if prompt is not None and prompt.strip():
            base = base.replace(prompt=prompt.strip())
        compose.update(target_seconds=round(target, 3), overlap=lap)
        compose["prompt"] = base.prompt
        steps = [Step(new_seconds, lap, target) for new_seconds in plan]
        caller = replace(caller, engine=caller.engine or entry.engine)
        async for update in self._chain(entry.id, compose, base, track, steps, caller):
            yield update

    async def _chain(
        self,
        entry_id: str,
        compose: dict[str, Any],
        base: GenerationRequest,
        track: AudioSegment | None,
        steps: list[Step],
        caller: Caller,
    ) -> AsyncIterator[ExtendUpdate]:
        """Mark the entry running (with `compose`), then run `steps` one after another, filing
        each part as it lands; then the chain's end.

        A stop (the consumer closes it), a failure or a refusal ends the chain resumable, with
        every part made so far kept.
        """
        owner = caller.owner
        count = max(1, len(steps))
        self._library.update(entry_id, compose={**compose, "state": "running"}, status="processing")
        yield ExtendUpdate(entry_id, 1, count, section=steps[0].section if steps else None)
        status, error = "succeeded", None
        try:
            for index, step in enumerate(steps, start=1):
                request = self._part_request(base, entry_id, track, step, index)
                final: RunUpdate | None = None
                # Closed at once on any exit, so that a stopped chain cancels its running part.
                async with contextlib.aclosing(
                    self._service.generate(
                        request,
                        token=caller.token,
                        owner=owner,
                        engine=caller.engine,
                        parent_run_id=entry_id,
                        kind="part",
                        ticket=caller.ticket,
                    )
                ) as updates:
                    async for update in updates:
                        if final is None and update.run_id:
                            self._note_pending(entry_id, owner, update.run_id, step)
                        final = update
                        yield ExtendUpdate(entry_id, index, count, run=update, section=step.section)
                if final is None or final.status != "succeeded" or not final.audio_path:
                    status = final.status if final else "failed"
                    error = (final.error if final else None) or "The part did not finish."
                    break
                track = await asyncio.to_thread(self._append, entry_id, owner, final, step.end)
        except (asyncio.CancelledError, GeneratorExit):
            self._stop(entry_id, owner, "interrupted")
            raise
        except StudioError as err:
            status, error = "failed", str(err)
        done = status == "succeeded"
        self._stop(entry_id, owner, "done" if done else "interrupted")
        # The piece's (or song's) tempo and key, once, when it has all its parts (or all it
        # will get).
        await asyncio.to_thread(self._service.measure_filed, entry_id)
        current = self._library.get(entry_id, owner)
        path = self._library.audio_file(current) if current else None
        yield ExtendUpdate(
            entry_id,
            count,
            count,
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
        entry = self._library.create_pending(
            owner,
            request,
            parent_id=source.id,
            engine=source.engine,
            checkpoint=source.checkpoint,
            kind="extend",
            compose={"source": source_span(source), "parts": []},
        )
        self._file_source(entry.id, source)
        self._library.update(entry.id, status="processing")
        return self._library.get(entry.id) or entry

    def _file_source(self, entry_id: str, source: RunRecord) -> None:
        """The source's audio becomes the composition's first stretch (and its track so far)."""
        audio = self._library.audio_file(source)
        assert audio is not None
        track = audio_ops.load(audio)
        audio_ops.export(track, self._folder(entry_id) / SOURCE_FILE, "wav")
        self._file_track(entry_id, track)

    def _folder(self, entry_id: str) -> Path:
        folder = self._library.compose_dir(entry_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _part_request(
        self,
        base: GenerationRequest,
        entry_id: str,
        track: AudioSegment | None,
        step: Step,
        index: int,
    ) -> GenerationRequest:
        """A continuation of the track's last `step.overlap` seconds by `step.new_seconds`
        (with no overlap, or no track yet: a plain take), under the step's prompt."""
        if step.prompt is not None:
            base = base.replace(prompt=step.prompt)
        # Lossless parts: an mp3's encoder delay would shift the joint.
        if track is None or step.overlap <= 0:
            return base.replace(
                input_audio=None, continuation=False, duration=step.new_seconds, output_format="wav"
            )
        tail = audio_ops.frames(track, audio_ops.seconds(track) - step.overlap)
        clip = audio_ops.export(tail, self._folder(entry_id) / f"tail-{index}.wav", "wav")
        return base.replace(
            input_audio=str(clip),
            continuation=True,
            continuation_start=0,
            continuation_end=None,
            duration=step.duration,
            output_format="wav",
            seed=None,
        )

    def _note_pending(self, entry_id: str, owner: str | None, run_id: str, step: Step) -> None:
        record = self._library.get(entry_id, owner)
        if record is None:
            return
        compose = dict(record.compose or {})
        pending: dict[str, Any] = {"run_id": run_id, "overlap": step.overlap}
        if step.section is not None:
            pending["section"] = step.section
        compose["pending"] = pending
        self._library.update(entry_id, compose=compose)

    def _append(
        self, entry_id: str, owner: str | None, final: RunUpdate, target: float
    ) -> AudioSegment:
        """File a finished part in the composition and return the track with it."""
        record = self._library.require(entry_id, owner)
        compose = dict(record.compose or {})
        pending = compose.pop("pending", None) or {}
        part_record = self._library.get(final.run_id or "", owner)
        start = self._track_seconds(record)
        parts = list(compose.get("parts") or [])
        overlap = pending["overlap"] if "overlap" in pending else compose.get("overlap")
        part: dict[str, Any] = {
            "run_id": final.run_id,
            "prediction_id": part_record.prediction_id if part_record else None,
            "overlap": int(overlap or 0),
            "start": round(start, 3),
        }
        if "section" in pending:
            part["section"] = pending["section"]
        parts.append(part)
        track = self._build(record, parts, target)
        assert track is not None  # it has a part
        parts[-1]["end"] = round(audio_ops.seconds(track), 3)
        compose["parts"] = parts
        self._file_track(entry_id, track)
        self._library.update(entry_id, compose=compose, status="processing")
        return track

    def _adopt_pending(self, entry: RunRecord, owner: str | None) -> AudioSegment | None:
        """The track, with a part that finished after its chain stopped appended first (None:
        a song with no part made yet)."""
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
        compose = (current.compose if current else None) or {}
        if not compose.get("source") and not compose.get("parts"):
            return None
        audio = self._library.audio_file(current) if current else None
        if audio is None:
            raise StudioError("This piece's audio is missing from the library.")
        return audio_ops.load(audio)

    def _build(
        self, entry: RunRecord, parts: list[dict[str, Any]], target: float | None
    ) -> AudioSegment | None:
        """The track: the source (if any), then each part's new audio joined at its overlap."""
        track = None
        if (entry.compose or {}).get("source"):
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
            new = audio_ops.frames(output, lead_in)
            join = min(CROSSFADE_SECONDS, lead_in)
            track = new if track is None else audio_ops.equal_power_join(track, new, join)
        if track is not None and target is not None and audio_ops.seconds(track) > target:
            track = audio_ops.frames(track, 0, target)
        return track

    def _track_seconds(self, record: RunRecord) -> float:
        """The track's length as its stretches say (its audio may be older: a song redone)."""
        compose = record.compose or {}
        last = (compose.get("parts") or [None])[-1] or compose.get("source") or {}
        return float(last.get("end") or 0)

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
        assert track is not None  # a piece always has its source
        compose.update(parts=parts, state="interrupted")
        self._file_track(entry_id, track)
        self._library.update(entry_id, compose=compose, status="succeeded")
        updated = self._library.get(entry_id, owner)
        assert updated is not None
        return updated

    def mark_interrupted(self) -> list[str]:
        """On start: chains an earlier process left running become resumable."""
        stopped = []
        for record in self._library.in_flight(kinds=CHAIN_KINDS):
            self._stop(record.id, None, "interrupted")
            stopped.append(record.id)
        return stopped


def source_span(source: RunRecord) -> dict[str, Any]:
    """The stretch a composition starts from: a result's whole audio."""
    return {
        "run_id": source.id,
        "prediction_id": source.prediction_id,
        "start": 0.0,
        "end": round(float(source.audio_seconds or 0), 3),
    }


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
