"""Seamless loops on the page (the "Loop" panel, beside the form).

The loop uses the form's prompt and settings plus a tempo and a number of bars; the take's
length is computed from them. Progress and Cancel work as for Generate (one run-stream helper);
the finished loop becomes the selected result and plays, looping, in the track. The `/loop`
endpoint is in `ui.endpoints`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from services.compose.loop import (
    BARS_MAX,
    BARS_MIN,
    BPM_MAX,
    BPM_MIN,
    SOURCE_MAX_SECONDS,
    LoopMaker,
    LoopSpec,
    parse_loop,
)
from services.engines.protocol import LOCAL
from services.errors import RequestInvalid, StudioError
from services.events import Progress, RunUpdate
from services.musicgen import GenerationRequest
from ui.context import Studio
from ui.engine_picker import model_for
from ui.events import PRIVATE, Updates
from ui.form_rules import form_values, request_values
from ui.formatting import errors_html, idle_progress_html, message_html, progress_html, status_html
from ui.run_stream import RunButtons, Stream, stream, wire_stream
from ui.runs import RunSeen, cancel_now, ended_status, progress_view

LOOP_CONCURRENCY = 16


@dataclass
class LoopView:
    panel: gr.Accordion
    bpm: gr.Slider
    bars: gr.Slider
    plan: gr.HTML
    make: gr.Button
    cancel: gr.Button
    errors: gr.HTML
    status: gr.HTML
    progress: gr.HTML
    logs: gr.Textbox
    current: gr.State  # the loop entry being made (for Cancel)


def plan_html(bpm: Any, bars: Any) -> str:
    """What the chosen tempo and bars make: the loop's length and the take asked for."""
    try:
        spec = parse_loop(bpm, bars)
    except RequestInvalid as err:
        return errors_html(err.errors, intro="This loop can't be made:")
    return (
        f'<div class="ms-clip-info" data-seconds="{spec.seconds:.3f}">{spec.bars} bar(s) of '
        f"4/4 at {spec.bpm:g} BPM = {spec.seconds:.3f} s. The model is asked for a "
        f"{spec.source_seconds} s take (at most {SOURCE_MAX_SECONDS} s) with "
        f"“{spec.bpm:g} bpm” in the prompt; the loop is cut on a downbeat.</div>"
    )


class LoopHandlers:
    """Make loop / Cancel for every visitor; holds no visitor state.

    The finished loop becomes the selected result: it plays (looping) in the track.
    """

    def __init__(self, studio: Studio, view: LoopView, selected: gr.State):
        self.studio = studio
        self.view = view
        self.selected = selected
        self.maker = LoopMaker(studio.service, studio.library)
        self.buttons = RunButtons(view.make, view.cancel)

    def outputs(self) -> list[gr.components.Component]:
        v = self.view
        return [
            v.errors,
            v.make,
            v.cancel,
            v.status,
            v.progress,
            v.logs,
            v.current,
            self.selected,
        ]

    async def make(
        self,
        owner_value: Any,
        token_value: Any,
        bpm: Any,
        bars: Any,
        engine: str | None,
        local_model: str | None,
        *form: Any,
    ) -> AsyncIterator[Updates]:
        """Check (nothing is sent if refused), make the take, cut the loop, show every step."""
        v = self.view
        visitor = self.studio.visitor(owner_value)
        owner = visitor.owner
        values = request_values(form_values(form))
        model_for(engine, local_model, values)
        link = engine != LOCAL
        seen = RunSeen()

        async def prepare() -> tuple[GenerationRequest, LoopSpec]:
            return await asyncio.to_thread(self.maker.prepare, values, bpm, bars, engine)

        def start(prepared: tuple[GenerationRequest, LoopSpec]) -> AsyncIterator[RunUpdate]:
            request, spec = prepared
            return self.maker.make(
                request,
                spec,
                token=self.studio.token(token_value),
                owner=owner,
                engine=engine,
                payer=visitor.payer,
            )

        def begin(_prepared: Any) -> Updates:
            return {
                v.errors: "",
                v.status: status_html("validating"),
                v.progress: progress_html(None, None),
                v.logs: "",
            }

        def show(update: RunUpdate, elapsed: float) -> Updates | None:
            lines = seen.show(v, update, elapsed, link=link)
            return None if lines is None else {**lines, v.current: update.run_id}

        async def finish(last: RunUpdate | None, elapsed: float) -> Updates:
            return self._finished(last, owner, seen.progress, elapsed)

        def failed(err: StudioError, _last: RunUpdate | None) -> Updates:
            return {
                v.errors: message_html(str(err)),
                v.status: status_html("idle"),
                v.progress: idle_progress_html(),
                v.current: None,
            }

        def refused(err: RequestInvalid) -> Updates:
            return {v.errors: errors_html(err.errors), v.status: status_html("idle")}

        how = Stream(self.buttons, prepare, start, begin, show, finish, refused, failed)
        async for changes in stream(how):
            yield changes

    def _finished(
        self, last: RunUpdate | None, owner: str | None, progress: Progress | None, elapsed: float
    ) -> Updates:
        v = self.view
        record = self.studio.library.get(last.run_id, owner) if last and last.run_id else None
        if last is None or last.status != "succeeded" or record is None or not record.has_audio:
            return {
                v.status: status_html(
                    last.status if last else "failed",
                    elapsed=elapsed,
                    error=(last.error if last else "The loop ended without news."),
                ),
                v.progress: idle_progress_html(),
                v.current: None,
            }
        return {
            v.status: status_html("succeeded", elapsed=elapsed),
            v.progress: progress_view(progress, complete=True),
            v.current: None,
            # The loop is the selected result: it plays, looping, in the track.
            self.selected: self.studio.snapshot(record),
        }

    async def cancel_pressed(self, run_id: str | None, owner_value: Any) -> Updates:
        """Cancel the loop's take now; Gradio then also cancels the event."""
        return cancel_now(self.studio, run_id, owner_value, self.view.status, self.view.cancel)

    async def after_cancel(self, run_id: str | None, owner_value: Any) -> Updates:
        """Cancel was pressed: wait until the loop entry is recorded as ended, then say so."""
        return {
            self.view.status: await ended_status(self.studio, run_id, owner_value),
            self.view.current: None,
            **self.buttons.state(running=False),
        }


def build_loop() -> LoopView:
    """The "Loop" panel (inside the current Blocks context); wire it with `wire_loop`."""
    with gr.Accordion(
        "Loop: a seamless loop for your DAW", open=False, elem_id="loop-box"
    ) as panel:
        gr.HTML(
            '<div class="ms-clip-info">Uses the prompt and settings of the form. The tempo goes '
            "into the prompt; the loop is cut to whole 4/4 bars on a downbeat and its end "
            "blends into its start. It plays, looping, in the track.</div>"
        )
        with gr.Row():
            bpm = gr.Slider(BPM_MIN, BPM_MAX, value=120, step=1, label="BPM", elem_id="loop-bpm")
            bars = gr.Slider(
                BARS_MIN, BARS_MAX, value=2, step=1, label="Bars (4/4)", elem_id="loop-bars"
            )
        plan = gr.HTML(plan_html(120, 2), elem_id="loop-plan")
        errors = gr.HTML("", elem_id="loop-errors")
        with gr.Row():
            make = gr.Button("Make loop", variant="primary", elem_id="loop-btn", scale=3)
            cancel = gr.Button(
                "Cancel", variant="stop", interactive=False, elem_id="loop-cancel", scale=1
            )
        status = gr.HTML(status_html("idle"), elem_id="loop-status")
        progress = gr.HTML(idle_progress_html(), elem_id="loop-progress")
        with gr.Accordion("Loop logs", open=False):
            logs = gr.Textbox(
                label="Logs", lines=6, max_lines=12, interactive=False, elem_id="loop-logs"
            )
    return LoopView(
        panel=panel,
        bpm=bpm,
        bars=bars,
        plan=plan,
        make=make,
        cancel=cancel,
        errors=errors,
        status=status,
        progress=progress,
        logs=logs,
        current=gr.State(None),
    )


def wire_loop(
    studio: Studio,
    view: LoopView,
    *,
    owner: gr.components.Component,
    token: gr.components.Component,
    run_inputs: list[gr.components.Component],
    selected: gr.State,
) -> list[Any]:
    """Make loop and Cancel; `run_inputs` are the engine, the local model and the form's
    request components. Returns the events after which the history refreshes."""
    handlers = LoopHandlers(studio, view, selected)
    for slider in (view.bpm, view.bars):
        slider.change(plan_html, [view.bpm, view.bars], [view.plan], **PRIVATE)
    return list(
        wire_stream(
            handlers.buttons,
            handlers.make,
            [owner, token, view.bpm, view.bars, *run_inputs],
            handlers.outputs(),
            concurrency_id="loop",
            concurrency_limit=LOOP_CONCURRENCY,
            stop=(handlers.cancel_pressed, [view.current, owner]),
            after_stop=(handlers.after_cancel, [view.current, owner]),
        )
    )
