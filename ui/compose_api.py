"""The composing endpoints: `/extend`, `/variations` and `/arrange`, beside `/generate`.

Like `/generate` they have hidden components of their own and no trigger on the page.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import gradio as gr

from services.compose.arrange import Arranger, section_spans
from services.compose.extend import DEFAULT_OVERLAP, Extender, ExtendUpdate, parts_summary
from services.compose.variations import MAX_TAKES, MIN_TAKES, Variations
from services.input_help import docstring
from services.library import RunRecord
from ui.api import (
    REQUEST_PARAMETERS,
    api_errors,
    api_record,
    model_input_components,
    request_endpoint,
    token_components,
)
from ui.context import Studio
from ui.take_audio import TakeAudio

EXTEND_DESCRIPTION = (
    "Extend a result into a longer piece (up to 5 minutes) by chained continuation: each part "
    "continues the last `overlap` seconds of the track so far, and only its new audio is "
    "appended (equal-power crossfade). `run_id` is a library id (a take, or a piece made by "
    "/extend to go on with); `seconds` is the new audio to add; `prompt` defaults to the run's. "
    "Returns the whole track and a record whose `parts` list each part's prediction id and "
    "time span, and whose `state` is done, or interrupted when a part failed (`stopped` says "
    "why; what was made is kept). On a shared deployment pass the `access_key` of the call that "
    "made the run."
)
ARRANGE_DESCRIPTION = (
    'Make a song in sections (up to 5 minutes): `sections` is a JSON list of {"prompt", '
    '"seconds"} (an optional "name" too, e.g. intro, verse). The first section is a plain '
    "take (or, with `run_id`, continues that result); each later part continues the last "
    "`overlap` seconds of the song so far under its own section's prompt (a section longer "
    "than 30 s takes several parts). Other parameters are /generate's (their prompt, "
    "duration and input audio are the sections'). With `song_id`: go on with a song that "
    "stopped, or with `from_section` (1-based) make it again from that section on (the "
    "sections before it are kept; `sections`, if given, replace it and the ones after). "
    "Returns the whole track and a record whose `sections` give each section's prompt, "
    "start, end and run."
)
VARIATIONS_DESCRIPTION = (
    "N takes (2-8) of one request at once, each with its own seed. Parameters are /generate's "
    "plus `n`; returns the N audio files and their records (each with its seed)."
)


class ComposeApi:
    """The composing features for API callers (and MCP clients)."""

    def __init__(
        self, studio: Studio, extender: Extender, variations: Variations, arranger: Arranger
    ):
        self.studio = studio
        self._extender = extender
        self._variations = variations
        self._arranger = arranger

    async def _finished(
        self, updates: AsyncIterator[ExtendUpdate], owner: str | None, what: str
    ) -> tuple[ExtendUpdate, RunRecord, dict[str, Any]]:
        """Follow a piece or a song to its end: its last update, its entry, the entry's record."""
        last: ExtendUpdate | None = None
        with api_errors():
            async for update in updates:
                last = update
        if last is None:
            raise gr.Error(f"The {what} ended without a result.")
        entry = self.studio.library.get(last.entry_id, owner)
        if entry is None:
            raise gr.Error(f"The {what} is no longer in the library.")
        return last, entry, api_record(self.studio.service.summary(entry.id, owner), owner)

    async def extend(
        self,
        run_id: str,
        seconds: float | None,
        prompt: str | None = None,
        overlap: float | None = None,
        access_key: str | None = None,
        api_token: str | None = None,
    ) -> tuple[str | None, dict[str, Any]]:
        """Extend `run_id` by `seconds`; returns (the whole track, its record with `parts`)."""
        visitor = self.studio.api_visitor(access_key)
        owner = visitor.owner
        updates = self._extender.extend(
            (run_id or "").strip(),
            seconds,
            token=self.studio.token(api_token),
            owner=owner,
            prompt=prompt or None,
            overlap=DEFAULT_OVERLAP if overlap is None else overlap,
            payer=visitor.payer,
        )
        last, entry, record = await self._finished(updates, owner, "piece")
        # Status and error are the entry's own, as the history shows them: a piece that
        # stopped early keeps what was made (succeeded) and says why it stopped.
        compose = entry.compose or {}
        record.update(
            parts=parts_summary(entry),
            target_seconds=compose.get("target_seconds"),
            state=compose.get("state"),
            stopped=None if last.status == "succeeded" else last.error,
        )
        audio = self.studio.files.servable(last.audio_path) if last.audio_path else None
        return audio, record

    async def arrange(self, named: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """A song in sections (or one to go on with, or to make again from a section)."""
        visitor = self.studio.api_visitor(named.get("access_key"))
        owner, payer = visitor.owner, visitor.payer
        engine = named.get("engine")
        token = self.studio.token(named.get("api_token"))
        song_id = (named.get("song_id") or "").strip()
        sections = named.get("sections")
        if song_id and named.get("from_section") is not None:
            updates = self._arranger.redo(
                song_id, named["from_section"], sections=sections or None, token=token,
                owner=owner, engine=engine, payer=payer,
            )  # fmt: skip
        elif song_id:
            updates = self._arranger.resume(
                song_id, token=token, owner=owner, engine=engine, payer=payer
            )
        else:
            settings = {name: named.get(name) for name in REQUEST_PARAMETERS}
            overlap = named.get("overlap")
            updates = self._arranger.arrange(
                sections, settings, token=token, owner=owner, engine=engine, payer=payer,
                overlap=DEFAULT_OVERLAP if overlap is None else overlap,
                from_run=(named.get("run_id") or "").strip() or None,
            )  # fmt: skip
        last, entry, record = await self._finished(updates, owner, "song")
        record.update(
            kind="song", sections=section_spans(entry), status=last.status, error=last.error
        )
        audio = self.studio.files.servable(last.audio_path) if last.audio_path else None
        return audio, record

    async def variations(self, named: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
        """`n` takes of the request at once; returns (their files, their records)."""
        raw = {name: named.get(name) for name in REQUEST_PARAMETERS}
        engine = (named.get("engine") or "").strip().lower() or None
        service = self.studio.service
        visitor = self.studio.api_visitor()
        owner = visitor.owner
        last = None
        with api_errors():
            prepared = await asyncio.to_thread(service.prepare, raw, engine)
            async for update in self._variations.run(
                prepared,
                MIN_TAKES if named.get("n") is None else named["n"],
                token=self.studio.token(named.get("api_token")),
                owner=owner,
                engine=engine,
                payer=visitor.payer,
            ):
                last = update
        if last is None:
            raise gr.Error("The variations ended without a result.")
        files: list[str] = []
        records: list[dict[str, Any]] = []
        for take in self._variations.takes(last.group_id, owner):
            if take is None:
                continue
            records.append(api_record(service.summary(take.id, owner), owner))
            audio = self.studio.library.audio_file(take) if take.has_audio else None
            served = self.studio.files.servable(audio) if audio is not None else None
            if served is not None:
                files.append(served)
        return files, records


ComposeApi.extend.__doc__ = docstring(
    EXTEND_DESCRIPTION,
    ["run_id", "seconds", "prompt", "overlap", "access_key", "api_token"],
    {
        "run_id": "The library id of the result to extend (a take, or a piece made by extend).",
        "seconds": "How many seconds of new music to add; the piece may reach 300 s in all. "
        "Empty, for a piece that stopped early: resume it to the length it was asked for.",
        "prompt": "What the new parts should sound like; empty: the run's own prompt.",
        "overlap": "Seconds of the track each part hears before it goes on (1 to 10).",
        "access_key": "On a shared server: the access_key of the record that made the run.",
    },
    "The whole track, and its record with `parts` (each part's prediction id and seconds).",
)
ARRANGE_EXTRA: dict[str, Any] = {
    "sections": None,
    "overlap": DEFAULT_OVERLAP,
    "run_id": None,
    "song_id": None,
    "from_section": None,
    "access_key": None,
}
ARRANGE_DOC = docstring(
    ARRANGE_DESCRIPTION,
    [*REQUEST_PARAMETERS, "engine", *ARRANGE_EXTRA, "api_token"],
    {
        "sections": 'The song\'s sections in order, as JSON: [{"name": "intro", "prompt": "soft '
        'piano", "seconds": 8}, ...]; each 1-300 s, 300 s in all.',
        "overlap": "Seconds of the song each part hears before it goes on (1 to 10).",
        "run_id": "A result's library id to start from: the first section continues it.",
        "song_id": "A song's library id: go on with it (or, with from_section, make it again).",
        "from_section": "With song_id: make the song again from this section (1-based) on.",
        "access_key": "On a shared server: the access_key of the record that made the song.",
    },
    "The whole track, and its record with `sections` (each one's prompt, start, end and run).",
)
VARIATIONS_DOC = docstring(
    VARIATIONS_DESCRIPTION,
    [*REQUEST_PARAMETERS, "engine", "n", "api_token"],
    {"n": "How many takes, from 2 to 8, each with its own seed."},
    "The takes' audio files, and their records (each with its seed).",
)


def build_compose_api(
    studio: Studio, extender: Extender, variations: Variations, arranger: Arranger
) -> None:
    """Hidden inputs and outputs of `/extend`, `/variations` and `/arrange`."""
    api = ComposeApi(studio, extender, variations, arranger)
    with gr.Column(visible=False):
        extend_inputs = [
            gr.Textbox(label="run_id"),
            gr.Number(20, label="seconds"),
            gr.Textbox("", label="prompt"),
            gr.Number(DEFAULT_OVERLAP, label="overlap"),
            gr.Textbox("", label="access_key"),
            *token_components(studio),
        ]
        extend_outputs = [TakeAudio(label="audio", type="filepath"), gr.JSON(label="record")]
        variation_inputs = [
            *model_input_components(),
            gr.Number(3, label="n", minimum=MIN_TAKES, maximum=MAX_TAKES),
            *token_components(studio),
        ]
        variation_outputs = [
            gr.File(label="takes", file_count="multiple"),
            gr.JSON(label="records"),
        ]
        arrange_inputs = [
            *model_input_components(),
            gr.JSON(None, label="sections"),
            gr.Number(DEFAULT_OVERLAP, label="overlap"),
            gr.Textbox("", label="run_id"),
            gr.Textbox("", label="song_id"),
            gr.Number(None, label="from_section"),
            gr.Textbox("", label="access_key"),
            *token_components(studio),
        ]
        arrange_outputs = [TakeAudio(label="audio", type="filepath"), gr.JSON(label="record")]
    gr.on(
        triggers=[],
        fn=api.extend,
        inputs=extend_inputs,
        outputs=extend_outputs,
        api_name="extend",
        api_description=EXTEND_DESCRIPTION,
        show_progress="hidden",
    )
    gr.on(
        triggers=[],
        fn=request_endpoint(api.variations, {"n": 3}, VARIATIONS_DOC),
        inputs=variation_inputs,
        outputs=variation_outputs,
        api_name="variations",
        api_description=VARIATIONS_DESCRIPTION,
        show_progress="hidden",
    )
    gr.on(
        triggers=[],
        fn=request_endpoint(api.arrange, ARRANGE_EXTRA, ARRANGE_DOC),
        inputs=arrange_inputs,
        outputs=arrange_outputs,
        api_name="arrange",
        api_description=ARRANGE_DESCRIPTION,
        show_progress="hidden",
    )
