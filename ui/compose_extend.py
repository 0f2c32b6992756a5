"""Extend the result into a longer piece: part by part, with the parts marked on one track."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gradio as gr

from services.compose.extend import (
    DEFAULT_OVERLAP,
    MAX_OVERLAP,
    MAX_TOTAL_SECONDS,
    Extender,
    ExtendUpdate,
    parts_summary,
)
from services.errors import RequestInvalid, StudioError
from services.library import RunRecord
from ui.context import Studio
from ui.formatting import errors_html, esc, message_html, progress_html, seconds_text
from ui.inputs import WAVEFORM

Updates = dict[gr.components.Component, Any]


@dataclass
class ChainEnd:
    """How a chain streamed by `stream_chain` ended: its last update (None: it was refused)."""

    last: ExtendUpdate | None = None


async def stream_chain(
    updates: AsyncIterator[ExtendUpdate],
    status: gr.components.Component,
    *,
    progress: Callable[[ExtendUpdate], Updates],
    idle: Updates,
    end: ChainEnd,
) -> AsyncIterator[Updates]:
    """A piece's or a song's updates as the page shows them while it is made; a refusal shows
    in `status` with the buttons `idle`. The chain is closed on any exit (a stop cancels its
    running part). `end.last` is its finished update, if it got that far."""
    try:
        async for update in updates:
            if update.finished:
                end.last = update
                break
            yield progress(update)
    except RequestInvalid as err:
        yield {status: errors_html(err.errors), **idle}
    except StudioError as err:
        yield {status: message_html(str(err)), **idle}
    finally:
        with contextlib.suppress(Exception):
            await updates.aclose()


def end_message(last: ExtendUpdate, done: str) -> str:
    """The status once a chain ended: `done`, or why it stopped early."""
    finished = last.status == "succeeded"
    return message_html(
        done if finished else (last.error or "Stopped."), kind="info" if finished else "error"
    )


PRIVATE: Mapping[str, Any] = {"api_visibility": "private", "show_progress": "hidden"}


@dataclass
class ExtendView:
    """The Extend panel's components."""

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
    track: gr.Audio
    parts: gr.HTML


def parts_html(
    record_compose: Mapping[str, Any] | None,
    spans: list[dict[str, Any]],
    *,
    bar_id: str = "ms-parts-bar",
) -> str:
    """One bar with a segment per stretch of the track: who made which seconds.

    A span's `label` names it (a song's section), else "original" / "part N"; spans with a
    `prompt` list it too.
    """
    if not spans:
        return ""
    total = max(float(s.get("end") or 0) for s in spans) or 1.0
    prompts = any("prompt" in s for s in spans)
    cells, rows = [], []
    for span in spans:
        start, end = float(span.get("start") or 0), float(span.get("end") or 0)
        label = span.get("label") or ("original" if span["part"] == 0 else f"part {span['part']}")
        width = 100.0 * (end - start) / total
        cells.append(
            f'<div class="ms-part ms-part-{span["part"] % 2}" style="width:{width:.2f}%" '
            f'data-part="{span["part"]}" data-start="{start:.2f}" data-end="{end:.2f}" '
            f'title="{esc(label)}: {start:.1f}–{end:.1f} s">{esc(label)}</div>'
        )
        prompt = f"<td>{esc(span.get('prompt') or '')}</td>" if prompts else ""
        rows.append(
            f"<tr><td>{esc(label)}</td><td>{start:.1f}–{end:.1f} s</td>{prompt}"
            f"<td>{esc(span.get('prediction_id') or '–')}</td></tr>"
        )
    state = (record_compose or {}).get("state")
    target = (record_compose or {}).get("target_seconds")
    note = ""
    if state == "interrupted" and target and target > total + 0.5:
        note = (
            f'<div class="ms-note">Stopped at {seconds_text(total)} of {seconds_text(target)}: '
            f"press Resume to go on ({seconds_text(target - total)} to go).</div>"
        )
    head = "<th>Prompt</th>" if prompts else ""
    return (
        f'<div class="ms-parts" id="{esc(bar_id)}">{"".join(cells)}</div>{note}'
        '<div class="ms-parts-scroll"><table class="ms-parts-table"><tr><th>Stretch</th>'
        f"<th>Seconds</th>{head}<th>Prediction</th></tr>{''.join(rows)}</table></div>"
    )


def _progress(update: ExtendUpdate) -> str:
    run = update.run
    progress = run.progress if run else None
    head = f'<div class="ms-part-of" data-part="{update.part}" data-parts="{update.parts}">'
    head += f"Part {update.part} of {update.parts}</div>"
    return head + progress_html(
        progress.done if progress else None, progress.total if progress else None
    )


def build_extend(studio: Studio) -> ExtendView:
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
            overlap = gr.Slider(
                1, MAX_OVERLAP, value=DEFAULT_OVERLAP, step=1,
                label="Overlap (seconds each part hears before it goes on)",
                elem_id="extend-overlap",
            )  # fmt: skip
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
            resume = gr.Button("Resume", elem_id="extend-resume", scale=1)
            undo = gr.Button("Undo last part", elem_id="extend-undo", scale=1)
        status = gr.HTML("", elem_id="extend-status")
        parts = gr.HTML("", elem_id="extend-parts")
        track = gr.Audio(
            type="filepath", label="The piece", interactive=False, waveform_options=WAVEFORM,
            buttons=["download"], elem_id="extend-track",
        )  # fmt: skip
    return ExtendView(
        panel, seconds, overlap, prompt, extend, resume, cancel, undo, source, status, track, parts
    )


class ExtendHandlers:
    """Extend, Stop and Undo; one instance serves every visitor."""

    def __init__(self, studio: Studio, view: ExtendView, extender: Extender, last_run: gr.State):
        self.studio = studio
        self.view = view
        self.extender = extender
        self.last_run = last_run  # the result shown: what Extend extends

    def outputs(self) -> list[gr.components.Component]:
        v = self.view
        return [v.status, v.track, v.parts, v.source, v.extend, v.cancel, v.undo, self.last_run]

    def _record(self, snap: dict[str, Any] | None, owner_value: Any) -> RunRecord | None:
        run_id = (snap or {}).get("run_id")
        if not run_id:
            return None
        return self.studio.library.get(run_id, self.studio.owner(owner_value))

    def show_source(self, snap: dict[str, Any] | None, owner_value: Any) -> Updates:
        """What Extend will extend: the result shown (a take, or a piece already extended)."""
        v = self.view
        record = self._record(snap, owner_value)
        if record is None or not record.has_audio:
            return {
                v.source: '<div class="ms-muted">Make or open a take first.</div>',
                v.undo: gr.update(interactive=False),
            }
        what = "this piece" if record.kind == "extend" else "this take"
        text = (
            f'<div data-run="{esc(record.id)}">Extends {what}: '
            f"<b>{esc(record.prompt or '(no prompt)')}</b> · "
            f"{esc(seconds_text(record.audio_seconds))}</div>"
        )
        out: Updates = {v.source: text, v.undo: gr.update(interactive=record.kind == "extend")}
        if record.kind == "extend":
            out[v.parts] = parts_html(record.compose, parts_summary(record))
        return out

    def _show_piece(self, record: RunRecord) -> Updates:
        """The piece as the result: its track, its parts, and the next Extend goes on with it."""
        v = self.view
        snapshot = self.studio.snapshot(record)
        return {
            v.track: snapshot["audio_path"],
            v.parts: parts_html(record.compose, parts_summary(record)),
            v.undo: gr.update(interactive=True),
            self.last_run: snapshot,
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
        """Add `seconds` to the result shown (None: resume a piece to its length)."""
        v = self.view
        visitor = self.studio.visitor(owner_value)
        owner = visitor.owner
        running = {v.extend: gr.update(interactive=False), v.cancel: gr.update(interactive=True)}
        idle = {v.extend: gr.update(interactive=True), v.cancel: gr.update(interactive=False)}
        updates = self.extender.extend(
            (snap or {}).get("run_id") or "",
            seconds,
            token=self.studio.token(token_value),
            owner=owner,
            prompt=prompt or None,
            overlap=overlap,
            payer=visitor.payer,
        )
        end = ChainEnd()
        chain = stream_chain(
            updates,
            v.status,
            progress=lambda update: {v.status: _progress(update), **running},
            idle=idle,
            end=end,
        )
        async for shown in chain:
            yield shown
        last = end.last
        if last is None:
            return
        out: Updates = {v.status: end_message(last, "Done: the piece is in your history."), **idle}
        record = self.studio.library.get(last.entry_id, owner)
        if record is not None:
            out.update(self._show_piece(record))
        yield out

    def after_stop(self, snap: dict[str, Any] | None, owner_value: Any) -> Updates:
        """Stop was pressed: the parts made so far stay; show the piece as it is."""
        v = self.view
        idle = {v.extend: gr.update(interactive=True), v.cancel: gr.update(interactive=False)}
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
                f"Undone: the piece is {seconds_text(record.audio_seconds)} again.", kind="info"
            ),
            **self._show_piece(record),
        }


def wire_extend(
    handlers: ExtendHandlers, *, owner: gr.components.Component, token: gr.components.Component
) -> list[Any]:
    """Connect the panel; returns the Extend and Resume events (the history refreshes after)."""
    v, last_run = handlers.view, handlers.last_run
    last_run.change(handlers.show_source, [last_run, owner], [v.source, v.undo, v.parts], **PRIVATE)
    event = v.extend.click(
        handlers.extend,
        [owner, token, last_run, v.seconds, v.overlap, v.prompt],
        handlers.outputs(),
        concurrency_limit=8,
        concurrency_id="generation",
        trigger_mode="once",
        **PRIVATE,
    )

    async def resume(*values: Any) -> AsyncIterator[Updates]:
        owner_value, token_value, snap, overlap, prompt = values
        async for out in handlers.extend(owner_value, token_value, snap, None, overlap, prompt):
            yield out

    resumed = v.resume.click(
        resume,
        [owner, token, last_run, v.overlap, v.prompt],
        handlers.outputs(),
        concurrency_limit=8,
        concurrency_id="generation",
        trigger_mode="once",
        **PRIVATE,
    )
    v.cancel.click(None, None, None, cancels=[event, resumed], queue=False, **PRIVATE).then(
        handlers.after_stop, [last_run, owner], handlers.outputs(), **PRIVATE
    )
    v.undo.click(handlers.undo, [last_run, owner], handlers.outputs(), **PRIVATE)
    return [event, resumed]
