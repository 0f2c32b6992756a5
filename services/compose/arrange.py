"""Songs in sections: each section (intro, verse, chorus...) has its own prompt and length.

A song is made by chained continuation, as Extend makes a long piece (`services.compose.extend`,
whose chain this reuses): the first section opens with a plain take under its prompt, and every
later part continues the last `overlap` seconds of the song so far under its own section's
prompt. A section longer than one run's window is made in several parts under the same prompt.
Parts are filed as they land, so a stop, a failure or a restart keeps what was made, and
Resume goes on.

The song is one library entry (`kind="song"`); its parts are runs inside it (`kind="part"`,
each with the index of its `section`). `compose` holds the sections asked for, the overlap,
the parts and, after a section is made again, the parts it `replaced` (their runs stay in the
library: nothing made is lost).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from pydub import AudioSegment

from services.compose.extend import (
    DEFAULT_OVERLAP,
    MAX_TOTAL_SECONDS,
    PART_MAX_SECONDS,
    Caller,
    Extender,
    ExtendUpdate,
    Step,
    overlap_error,
    plan_parts,
    source_span,
)
from services.cost import Estimate
from services.errors import FieldError, RequestInvalid
from services.generation import PreparedRun
from services.library import RunRecord
from services.musicgen import PROMPT_MAX_CHARS, GenerationRequest
from services.spending import Ticket

MAX_SECTIONS = 24
EXAMPLE = (
    '[{"prompt": "soft piano intro", "seconds": 8}, {"prompt": "full band verse", "seconds": 16}]'
)


@dataclass(frozen=True)
class Section:
    """One section of a song: what it sounds like and how long it lasts."""

    prompt: str
    seconds: int
    name: str = ""

    def label(self, index: int) -> str:
        """Its name, or "section N" (`index` is 0-based)."""
        return self.name or f"section {index + 1}"


def _refused(message: str) -> RequestInvalid:
    return RequestInvalid([FieldError("sections", message)])


def _section(index: int, item: Any) -> tuple[Section | None, list[str]]:
    """One section from its JSON object, or why not (each reason names the section)."""
    where = f"section {index + 1}"
    if not isinstance(item, Mapping):
        return None, [f'{where}: give it as {{"prompt": "...", "seconds": 8}}.']
    problems = []
    prompt = str(item.get("prompt") or "").strip()
    if not prompt:
        problems.append(f"{where}: describe its music in a prompt.")
    elif len(prompt) > PROMPT_MAX_CHARS:
        problems.append(
            f"{where}: its prompt is {len(prompt)} characters; at most {PROMPT_MAX_CHARS}."
        )
    seconds = _whole_seconds(item.get("seconds"))
    if seconds is None:
        problems.append(
            f"{where}: its seconds must be a whole number from 1 to {MAX_TOTAL_SECONDS}."
        )
    name = str(item.get("name") or "").strip()[:40]
    if problems or seconds is None:
        return None, problems
    return Section(prompt, seconds, name), []


def _whole_seconds(raw: Any) -> int | None:
    """A section's length, if it is a whole number of seconds in range."""
    if isinstance(raw, bool):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value) or value != int(value):
        return None
    return int(value) if 1 <= value <= MAX_TOTAL_SECONDS else None


def parse_sections(raw: Any) -> list[Section]:
    """The sections from a list of {"prompt", "seconds"} (or a string holding that JSON).

    Raises RequestInvalid (field "sections") naming every section refused and why.
    """
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else []
        except json.JSONDecodeError as err:
            raise _refused(
                f"Sections must be a JSON list such as {EXAMPLE} ({err.msg} at character "
                f"{err.pos + 1})."
            ) from None
    if not isinstance(raw, list) or not raw:
        raise _refused(f"Give at least one section, each with a prompt and seconds: {EXAMPLE}.")
    if len(raw) > MAX_SECTIONS:
        raise _refused(f"A song can have at most {MAX_SECTIONS} sections; this has {len(raw)}.")
    sections, problems = [], []
    for index, item in enumerate(raw):
        section, why = _section(index, item)
        problems += why
        if section is not None:
            sections.append(section)
    total = sum(s.seconds for s in sections)
    if not problems and total > MAX_TOTAL_SECONDS:
        problems.append(
            f"The sections add up to {total} s; a song can be at most {MAX_TOTAL_SECONDS} s "
            f"({total - MAX_TOTAL_SECONDS} s too many)."
        )
    if problems:
        raise RequestInvalid([FieldError("sections", p) for p in problems])
    return sections


def plan_song(
    sections: Sequence[Section], overlap: int, made: float = 0.0, offset: float = 0.0
) -> list[Step]:
    """The runs that make the song from `made` seconds on, section by section.

    The sections start at `offset` (the length of a result the song starts from, else 0).
    A song's opening is a plain take (at most one run's window); after it, each part
    continues the song's last `overlap` seconds (fewer while the song is shorter than that).
    """
    steps: list[Step] = []
    start, track = offset, max(made, offset)
    for index, section in enumerate(sections):
        end = start + section.seconds
        if end - max(track, start) > 0.05:
            if track < 0.05:  # the song's opening
                first = min(section.seconds, PART_MAX_SECONDS)
                steps.append(Step(first, 0, float(first), section.prompt, index))
                track = float(first)
            if end - track > 0.05:
                lap = min(overlap, max(1, math.floor(track)))
                for new in plan_parts(end - track, lap):
                    track += new
                    steps.append(Step(new, lap, min(track, end), section.prompt, index))
            track = end
        start = end
    return steps


def section_spans(record: RunRecord) -> list[dict[str, Any]]:
    """Each section of a song: its name, prompt, seconds, where it lies and which runs made it.

    `start`/`end` are the track's seconds; `run` is the run that made it (its first, when a
    long section took several: all are in `runs`); sections not made yet have `run` None.
    """
    compose = record.compose or {}
    parts = list(compose.get("parts") or [])
    spans, start = [], song_offset(record)
    for index, raw in enumerate(compose.get("sections") or []):
        section = Section(**raw)
        mine = [p for p in parts if p.get("section") == index]
        made_end = max((float(p.get("end") or 0) for p in mine), default=None)
        span = {
            "section": index + 1,
            "name": section.label(index),
            "prompt": section.prompt,
            "seconds": section.seconds,
            "start": round(float(mine[0]["start"]) if mine else start, 3),
            "end": round(made_end if made_end is not None else start + section.seconds, 3),
            "made": made_end is not None and made_end >= start + section.seconds - 0.05,
            "run": mine[0]["run_id"] if mine else None,
            "runs": [p["run_id"] for p in mine],
            "prediction_ids": [p.get("prediction_id") for p in mine],
        }
        spans.append(span)
        start += section.seconds
    return spans


def song_offset(record: RunRecord) -> float:
    """Where a song's first section starts: after the result it started from, if any."""
    return float(((record.compose or {}).get("source") or {}).get("end") or 0)


class Arranger(Extender):
    """Makes songs in sections, part by part; one instance serves every visitor."""

    def _check_song(
        self,
        raw_sections: Any,
        overlap: Any,
        settings: Mapping[str, Any],
        engine: str | None,
        source: RunRecord | None,
    ) -> tuple[list[Section], int, PreparedRun]:
        """The sections, the overlap and the song's settings, or every refusal at once."""
        errors: list[FieldError] = []
        sections: list[Section] = []
        try:
            sections = parse_sections(raw_sections)
        except RequestInvalid as err:
            errors += err.errors
        if source is not None:
            room = MAX_TOTAL_SECONDS - float(source.audio_seconds or 0)
            total = sum(s.seconds for s in sections)
            if total > room + 1e-6:
                errors.append(
                    FieldError(
                        "sections",
                        f"The result it starts from is {source.audio_seconds:.1f} s long: the "
                        f"sections can add at most {max(0, math.floor(room))} s, not {total} s.",
                    )
                )
        refused = overlap_error(overlap)
        if refused is not None:
            errors.append(refused)
        first = sections[0] if sections else Section("", 1)
        values = {
            **settings,
            # The song's sections are its only inputs: its opening is a plain take.
            "prompt": first.prompt or "song",
            "duration": min(first.seconds, PART_MAX_SECONDS),
            "input_audio": None,
            "continuation": False,
        }
        prepared: PreparedRun | None = None
        try:
            prepared = self._service.prepare(values, engine)
        except RequestInvalid as err:
            errors += err.errors
        if prepared is not None:
            for index, section in enumerate(sections[1:], start=1):
                request = prepared.request.replace(prompt=section.prompt)
                try:
                    self._service.check(request, engine)
                except RequestInvalid as err:
                    errors += [
                        FieldError("sections", f"section {index + 1}: {e.message}")
                        for e in err.errors
                    ]
        if errors:
            raise RequestInvalid(errors)
        assert prepared is not None
        return sections, int(overlap), prepared

    def _admit(
        self,
        base: GenerationRequest,
        steps: list[Step],
        owner: str | None,
        engine: str,
        payer: str | None,
    ) -> Ticket:
        """The song is one click: every run it will make is held to the caps before the first
        starts (they run one at a time); close the ticket when the song stops."""
        runs = [base.replace(duration=step.duration) for step in steps]
        return self._service.reserve(runs, owner, engine, payer=payer)

    def estimate(
        self, raw_sections: Any, overlap: Any, model_version: str, engine: str | None
    ) -> tuple[int, Estimate]:
        """(how many runs, their Estimate) for a song; refused sections raise RequestInvalid."""
        sections = parse_sections(raw_sections)
        lap = DEFAULT_OVERLAP if overlap_error(overlap) else int(overlap)
        steps = plan_song(sections, lap)
        durations = [s.duration for s in steps]
        return len(steps), self._service.estimate_runs(model_version, durations, engine)

    async def arrange(
        self,
        sections: Any,
        settings: Mapping[str, Any],
        *,
        token: str | None,
        owner: str | None,
        overlap: Any = DEFAULT_OVERLAP,
        engine: str | None = None,
        payer: str | None = None,
        from_run: str | None = None,
    ) -> AsyncIterator[ExtendUpdate]:
        """Make a song: `sections` (see `parse_sections`) under `settings` (/generate's inputs;
        their prompt, duration and clip are the sections'). Refusals come before anything is
        stored or sent; `payer`'s caps hold every run of the song at once.

        `from_run`: a result (a library id) the song starts from; its first section continues
        that result instead of opening with a plain take.
        """
        source = self._library.get(from_run.strip(), owner) if from_run else None
        if from_run and (source is None or not source.has_audio):
            raise RequestInvalid(
                [FieldError("run_id", "A song can start from a finished result in your library.")]
            )
        parsed, lap, prepared = await asyncio.to_thread(
            self._check_song, sections, overlap, settings, engine, source
        )
        offset = float(source.audio_seconds or 0) if source else 0.0
        steps = plan_song(parsed, lap, offset, offset)
        ticket = self._admit(prepared.request, steps, owner, prepared.engine, payer)
        caller = Caller(token, owner, prepared.engine, ticket)
        setup = partial(self._file_song, owner, prepared, parsed, lap, source)
        async for update in self._run(caller, steps, setup):
            yield update

    def _file_song(
        self,
        owner: str | None,
        prepared: PreparedRun,
        parsed: list[Section],
        lap: int,
        source: RunRecord | None,
    ) -> tuple[RunRecord, AudioSegment | None]:
        """File a new song's entry: (the entry, its track so far: the result it starts from)."""
        offset = float(source.audio_seconds or 0) if source else 0.0
        total = offset + sum(s.seconds for s in parsed)
        stored = prepared.request.replace(
            prompt=" → ".join(s.prompt for s in parsed)[:PROMPT_MAX_CHARS], duration=total
        )
        compose: dict[str, Any] = {
            "sections": [asdict(s) for s in parsed],
            "overlap": lap,
            "target_seconds": total,
            "parts": [],
            "replaced": [],
            "state": "running",
        }
        if source is not None:
            compose["source"] = source_span(source)
        entry = self._library.create_pending(
            owner,
            stored.to_dict(),
            parent_id=source.id if source else None,
            engine=prepared.engine,
            kind="song",
            compose=compose,
        )
        if source is None:
            return entry, None
        self._file_source(entry.id, source)
        return entry, self._build(entry, [], None)

    async def resume(
        self,
        entry_id: str,
        *,
        token: str | None,
        owner: str | None,
        engine: str | None = None,
        payer: str | None = None,
    ) -> AsyncIterator[ExtendUpdate]:
        """Go on with a song that stopped: the sections not made yet (a part that landed after
        the stop is used, not made again)."""
        entry = self._song(entry_id, owner)
        track = await asyncio.to_thread(self._adopt_pending, entry, owner)
        entry = self._song(entry_id, owner)
        steps = self._steps(entry)
        caller = self._hold(entry, steps, token, owner, engine, payer)
        async for update in self._run(caller, steps, lambda: (entry, track)):
            yield update

    async def redo(
        self,
        entry_id: str,
        section: Any,
        *,
        token: str | None,
        owner: str | None,
        sections: Any = None,
        engine: str | None = None,
        payer: str | None = None,
    ) -> AsyncIterator[ExtendUpdate]:
        """Make the song again from `section` (1-based) on; the sections before it are kept.

        `sections`, if given, replaces the song's sections from that one on (those before it
        stay as they were made). The parts replaced stay in the library as runs of the song.
        """
        entry = self._song(entry_id, owner)
        compose = dict(entry.compose or {})
        current = [Section(**s) for s in compose.get("sections") or []]
        try:
            number = int(section)
            if number != float(section) or not 1 <= number <= len(current):
                raise ValueError
        except (TypeError, ValueError):
            raise RequestInvalid(
                [FieldError("section", f"Choose a section from 1 to {len(current)} to make again.")]
            ) from None
        wanted = current
        if sections is not None:
            given = parse_sections(sections)
            if len(given) < number:
                raise RequestInvalid(
                    [FieldError("sections", f"The sections end before section {number}.")]
                )
            wanted = current[: number - 1] + given[number - 1 :]
            if song_offset(entry) + sum(s.seconds for s in wanted) > MAX_TOTAL_SECONDS:
                raise RequestInvalid(
                    [FieldError("sections", f"A song can be at most {MAX_TOTAL_SECONDS} s.")]
                )
        await asyncio.to_thread(self._adopt_pending, entry, owner)
        entry = self._song(entry_id, owner)
        compose = dict(entry.compose or {})
        parts = list(compose.get("parts") or [])
        kept = [p for p in parts if int(p.get("section", 0)) < number - 1]
        lap = int(compose.get("overlap") or DEFAULT_OVERLAP)
        offset = song_offset(entry)
        made = float(kept[-1]["end"]) if kept else offset
        steps = plan_song(wanted, lap, made, offset)
        caller = self._hold(entry, steps, token, owner, engine, payer)
        setup = partial(self._replan, entry, wanted, kept, owner)
        async for update in self._run(caller, steps, setup):
            yield update

    def _replan(
        self, entry: RunRecord, wanted: list[Section], kept: list[dict[str, Any]], owner: str | None
    ) -> tuple[RunRecord, AudioSegment | None]:
        """Set a song to make `wanted` again after its `kept` parts (the others are kept as
        replaced): (the entry, its track so far)."""
        compose = dict(entry.compose or {})
        now = time.time()
        parts = list(compose.get("parts") or [])
        replaced = [{**p, "replaced_at": now} for p in parts if p not in kept]
        compose.update(
            sections=[asdict(s) for s in wanted],
            parts=kept,
            replaced=[*(compose.get("replaced") or []), *replaced],
            target_seconds=song_offset(entry) + sum(s.seconds for s in wanted),
        )
        self._library.update(entry.id, compose=compose)
        track = self._build(entry, kept, None)
        if track is not None:
            self._file_track(entry.id, track)
        return self._song(entry.id, owner), track

    # -- shared by the three -------------------------------------------------------------

    def _song(self, entry_id: str, owner: str | None) -> RunRecord:
        record = self._library.get((entry_id or "").strip(), owner)
        if record is None or record.kind != "song":
            raise RequestInvalid(
                [FieldError("run_id", "That song is not in your library (give a song's id).")]
            )
        return record

    def _hold(
        self,
        entry: RunRecord,
        steps: list[Step],
        token: str | None,
        owner: str | None,
        engine: str | None,
        payer: str | None,
    ) -> Caller:
        """Who a song that goes on is made for, its runs held to the caps (see `_admit`)."""
        engine = engine or entry.engine
        ticket = self._admit(self._base(entry), steps, owner, engine or "", payer)
        return Caller(token, owner, engine, ticket)

    def _base(self, entry: RunRecord) -> GenerationRequest:
        return GenerationRequest.from_dict(entry.request)

    def _steps(self, entry: RunRecord) -> list[Step]:
        """What is left to make of a song, from where its track ends."""
        compose = entry.compose or {}
        sections = [Section(**s) for s in compose.get("sections") or []]
        lap = int(compose.get("overlap") or DEFAULT_OVERLAP)
        return plan_song(sections, lap, self._track_seconds(entry), song_offset(entry))

    async def _run(
        self,
        caller: Caller,
        steps: list[Step],
        setup: Callable[[], tuple[RunRecord, AudioSegment | None]],
    ) -> AsyncIterator[ExtendUpdate]:
        """Set the song up (`setup`, in a worker thread: its entry and its track so far), make
        its `steps` on the chain (see Extender._chain), then free what the song's ticket still
        holds: a song refused or failed before it runs frees all it held."""
        try:
            entry, track = await asyncio.to_thread(setup)
            compose = dict(entry.compose or {})
            chain = self._chain(entry.id, compose, self._base(entry), track, steps, caller)
            async for update in chain:
                yield update
        finally:
            if caller.ticket is not None:
                caller.ticket.close()
