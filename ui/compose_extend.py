"""Extend the selected result into a longer piece, part by part; the piece plays in the track
with its parts marked (see `ui.track`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from services.compose.extend import (
    DEFAULT_OVERLAP,
    MAX_OVERLAP,
    MAX_TOTAL_SECONDS,
    Extender,
    ExtendUpdate,
)
from services.errors import RequestInvalid, StudioError
from services.library import RunRecord
from ui.context import Studio
from ui.events import PRIVATE, Updates
from ui.formatting import errors_html, esc, message_html, progress_html, seconds_text
from ui.run_slots import run_slots
from ui.run_stream import RunButtons, Stream, stream, wire_stream
from ui.selection import Selection


def overlap_slider(elem_id: str) -> gr.Slider:
    """How much of the music so far each new part hears (Extend and Arrange alike)."""
    return gr.Slider(
        1, MAX_OVERLAP, value=DEFAULT_OVERLAP, step=1,
        label="Overlap (seconds each part hears before it goes on)", elem_id=elem_id,
    )  # fmt: skip


@dataclass
class ExtendView:
    """The Extend panel's components (the piece itself plays in the track)."""

    panel: gr.Accordion
    seconds: gr.Slider
    overlap: gr.Slider
    prompt: gr.Textbox
    extend: gr.Button
    resume: gr.Button
    cancel: gr.Button
    undo: gr.Button
    source: gr.HTML
    status: gr.HTML
    note: gr.HTML


def piece_note(record: RunRecord) -> str:
    """How long the piece is against what was asked, when it is shorter (Resume goes on)."""
    compose = record.compose or {}
    target = compose.get("target_seconds")
    total = record.audio_seconds or 0.0
    if not target or target <= total + 0.5:
        return ""
    return (
        f'<div class="ms-note">The piece is {seconds_text(total)} of the '
        f"{seconds_text(target)} you asked for: Resume goes on to {seconds_text(target)}, "
        "Extend adds more.</div>"
    )


def can_resume(record: RunRecord | None) -> bool:
    """Resume means something only for a piece shorter than the length asked for."""
    return record is not None and record.kind == "extend" and bool(piece_note(record))


def _progress(update: ExtendUpdate) -> str:
    run = update.run
    progress = run.progress if run else None
    head = f'<div class="ms-part-of" data-part="{update.part}" data-parts="{update.parts}">'
    head += f"Part {update.part} of {update.parts}</div>"
    return head + progress_html(
        progress.done if progress else None, progress.total if progress else None
    )


def end_message(last: ExtendUpdate, done: str) -> str:
    """The status once a chain (a piece, a song) ended: `done`, or why it stopped early."""
    finished = last.status == "succeeded"
    return message_html(
        done if finished else (last.error or "Stopped."), kind="info" if finished else "error"
    )


def build_extend() -> ExtendView:
    """Lay out the panel (inside the current Blocks context)."""
    with gr.Accordion("Extend into a longer piece", open=False, elem_id="extend-panel") as panel:
        source = gr.HTML(
            '<div class="ms-muted">Make or open a take first; it is extended here.</div>',
            elem_id="extend-source",
        )
        with gr.Row():
            seconds = gr.Slider(
                1, MAX_TOTAL_SECONDS - 1, value=20, step=1, label="Seconds to add",
                elem_id="extend-seconds",
            )  # fmt: skip
            overlap = overlap_slider("extend-overlap")
        prompt = gr.Textbox(
            label="Prompt for the new parts",
            placeholder="Leave empty to keep the take's prompt",
            elem_id="extend-prompt",
        )
        with gr.Row():
            extend = gr.Button("Extend", variant="primary", elem_id="extend-btn", scale=2)
            cancel = gr.Button(
                "Stop", variant="stop", interactive=False, elem_id="extend-cancel", scale=1
            )
            resume = gr.Button("Resume", interactive=False, elem_id="extend-resume", scale=1)
            undo = gr.Button(
                "Take off the last part", interactive=False, elem_id="extend-undo", scale=1
            )
        status = gr.HTML("", elem_id="extend-status")
        note = gr.HTML("", elem_id="extend-parts")
    return ExtendView(
        panel, seconds, overlap, prompt, extend, resume, cancel, undo, source, status, note
    )


class ExtendHandlers:
    """Extend, Stop, Resume and Undo; one instance serves every visitor."""

    def __init__(self, studio: Studio, view: ExtendView, extender: Extender, last_run: gr.State):
        self.studio = studio
        self.view = view
        self.extender = extender
        self.last_run = last_run  # the selected result: what Extend extends
        self.buttons = RunButtons(view.extend, view.cancel)

    def outputs(self) -> list[gr.components.Component]:
        v = self.view
        return [v.status, v.note, v.source, v.extend, v.cancel, v.resume, v.undo, self.last_run]

    def _record(self, snap: dict[str, Any] | None, owner_value: Any) -> RunRecord | None:
        run_id = (snap or {}).get("run_id")
        if not run_id:
            return None
        return self.studio.library.get(run_id, self.studio.owner(owner_value))

    def show_source(self, snap: dict[str, Any] | None, owner_value: Any) -> Updates:
        """What Extend will extend: the selected result (a take, or a piece already extended)."""
        v = self.view
        record = self._record(snap, owner_value)
        if record is None or not record.has_audio:
            return {
                v.source: '<div class="ms-muted">Make or open a take first.</div>',
                v.undo: gr.update(interactive=False),
                v.resume: gr.update(interactive=False),
                v.note: "",
            }
        what = "this piece" if record.kind == "extend" else "this take"
        text = (
            f'<div data-run="{esc(record.id)}">Extends {what}: '
            f"<b>{esc(record.prompt or '(no prompt)')}</b> · "
            f"{esc(seconds_text(record.audio_seconds))}</div>"
        )
        parts = (record.compose or {}).get("parts") or []
        return {
            v.source: text,
            v.undo: gr.update(interactive=record.kind == "extend" and bool(parts)),
            v.resume: gr.update(interactive=can_resume(record)),
            v.note: piece_note(record) if record.kind == "extend" else "",
        }

    def _show_piece(self, record: RunRecord) -> Updates:
        """The piece becomes the selected result (the track shows it, parts marked)."""
        v = self.view
        parts = (record.compose or {}).get("parts") or []
        return {
            v.note: piece_note(record),
            v.undo: gr.update(interactive=bool(parts)),
            v.resume: gr.update(interactive=can_resume(record)),
            self.last_run: self.studio.snapshot(record),
        }

    async def extend(
        self,
        owner_value: Any,
        token_value: Any,
        snap: dict[str, Any] | None,
        seconds: float | None,
        overlap: float,
        prompt: str,
    ) -> AsyncIterator[Updates]:
        """Add `seconds` to the selected result (None: resume a piece to its length)."""
        v = self.view
        visitor = self.studio.visitor(owner_value)
        owner = visitor.owner

        async def prepare() -> None:
            return None

        def start(_prepared: None) -> AsyncIterator[ExtendUpdate]:
            return self.extender.extend(
                (snap or {}).get("run_id") or "",
                seconds,
                token=self.studio.token(token_value),
                owner=owner,
                prompt=prompt or None,
                overlap=overlap,
                payer=visitor.payer,
            )

        def begin(_prepared: None) -> Updates:
            return {v.status: "", v.resume: gr.update(interactive=False)}

        def show(update: ExtendUpdate, _elapsed: float) -> Updates:
            return {v.status: _progress(update)}

        async def finish(last: ExtendUpdate | None, _elapsed: float) -> Updates:
            if last is None:
                return {}
            done = "Done: the piece plays in the track and is in your history."
            out: Updates = {v.status: end_message(last, done)}
            record = self.studio.library.get(last.entry_id, owner)
            if record is not None:
                out.update(self._show_piece(record))
            return out

        def refused(err: RequestInvalid) -> Updates:
            return {v.status: errors_html(err.errors)}

        def failed(err: StudioError, _last: ExtendUpdate | None) -> Updates:
            return {v.status: message_html(str(err))}

        how = Stream(self.buttons, prepare, start, begin, show, finish, refused, failed)
        async for changes in stream(how):
            yield changes

    def after_stop(self, snap: dict[str, Any] | None, owner_value: Any) -> Updates:
        """Stop was pressed: the parts made so far stay; show the piece as it is."""
        v = self.view
        idle = self.buttons.state(running=False)
        record = self._record(snap, owner_value)
        if record is not None and record.kind != "extend":
            # A first Extend of a take made a new piece, filed under the take.
            owner = self.studio.owner(owner_value)
            pieces = [
                r for r in self.studio.library.children(record.id, owner) if r.kind == "extend"
            ]
            record = pieces[-1] if pieces else None
        if record is None:
            return {v.status: message_html("Stopped.", kind="info"), **idle}
        return {
            v.status: message_html(
                "Stopped: everything made so far is kept. Press Resume to go on to the length "
                "you asked for, or Extend to add more.",
                kind="info",
            ),
            **self._show_piece(record),
            **idle,
        }

    def undo(self, snap: dict[str, Any] | None, owner_value: Any) -> Updates:
        v = self.view
        record = self._record(snap, owner_value)
        if record is None or record.kind != "extend":
            return {v.status: message_html("Only a piece made by Extend has parts to undo.")}
        try:
            record = self.extender.undo_last(record.id, self.studio.owner(owner_value))
        except StudioError as err:
            return {v.status: message_html(str(err))}
        return {
            v.status: message_html(
                f"Took off the last part: the piece is {seconds_text(record.audio_seconds)} again.",
                kind="info",
            ),
            **self._show_piece(record),
        }


def wire_extend(
    handlers: ExtendHandlers,
    *,
    selection: Selection,
    owner: gr.components.Component,
    token: gr.components.Component,
) -> list[Any]:
    """Connect the panel; returns the events after which the history refreshes."""
    v, last_run = handlers.view, handlers.last_run
    selection.watch(handlers.show_source, [last_run, owner], [v.source, v.undo, v.resume, v.note])

    async def resume(*values: Any) -> AsyncIterator[Updates]:
        owner_value, token_value, snap, overlap, prompt = values
        async for out in handlers.extend(owner_value, token_value, snap, None, overlap, prompt):
            yield out

    resumed = v.resume.click(
        resume,
        [owner, token, last_run, v.overlap, v.prompt],
        handlers.outputs(),
        **run_slots(handlers.studio.settings),
        trigger_mode="once",
        **PRIVATE,
    )
    started, stopped = wire_stream(
        handlers.buttons,
        handlers.extend,
        [owner, token, last_run, v.seconds, v.overlap, v.prompt],
        handlers.outputs(),
        **run_slots(handlers.studio.settings),
        after_stop=(handlers.after_stop, [last_run, owner]),
        also_cancels=[resumed],
    )
    undone = v.undo.click(handlers.undo, [last_run, owner], handlers.outputs(), **PRIVATE)
    return [started, resumed, stopped, undone]
