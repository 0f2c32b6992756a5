"""Seamless loops on the page ("Loop" below the form) and as the `/loop` endpoint.

The loop uses the form's prompt and settings plus a tempo and a number of bars; the take's
length is computed from them. Progress and Cancel work as for Generate; the result plays in an
HTML <audio loop> player and downloads in any format.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import gradio as gr

from services.compose.formats import FormatCache
from services.compose.loop import (
    BARS_MAX,
    BARS_MIN,
    BPM_MAX,
    BPM_MIN,
    SOURCE_MAX_SECONDS,
    LoopMaker,
    loop_summary,
    parse_loop,
)
from services.engines.protocol import LOCAL
from services.errors import RequestInvalid, StudioError
from services.events import Progress, RunUpdate
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
from ui.engine_picker import model_for
from ui.form_rules import form_values, request_values
from ui.formats import FormatButtons, build_format_buttons
from ui.formatting import (
    errors_html,
    esc,
    message_html,
    progress_html,
    seconds_text,
    status_html,
)
from ui.runs import cancel_inner, cancel_now, ended_status

PRIVATE: Mapping[str, Any] = MappingProxyType(
    {"api_visibility": "private", "show_progress": "hidden"}
)
LOOP_CONCURRENCY = 16
LOG_LINES_SHOWN = 200
DESCRIPTION = (
    "A seamless loop for a DAW: /generate's parameters plus `bpm` (40-240) and `bars` (1-16, "
    "4/4). The tempo is written into the prompt and the take is as long as the bars need "
    "(`duration` is ignored; at most 30 s). Returns the loop (WAV, exactly bars x 4 x 60 / bpm "
    "seconds, its wrap-around blended) named with its bpm and bars, and its record (kind "
    "loop, compose: bpm, bars, source_run)."
)
IDLE = '<div class="ms-empty" id="loop-empty">No loop yet.</div>'

Updates = dict[gr.components.Component, Any]


@dataclass
class LoopView:
    bpm: gr.Slider
    bars: gr.Slider
    plan: gr.HTML
    make: gr.Button
    cancel: gr.Button
    errors: gr.HTML
    status: gr.HTML
    progress: gr.HTML
    logs: gr.Textbox
    player: gr.HTML
    facts: gr.HTML
    formats: FormatButtons
    current: gr.State  # the loop entry being made (for Cancel)
    last: gr.State  # {"run_id": ...} of the loop shown


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


def file_url(path: str) -> str:
    """The page-relative URL Gradio serves a file of its cache from."""
    return "gradio_api/file=" + urllib.parse.quote(path)


def player_html(url: str, name: str, run_id: str) -> str:
    return (
        f'<div class="ms-loop-player" data-run="{esc(run_id)}">'
        f'<audio controls loop preload="auto" src="{esc(url)}" data-run="{esc(run_id)}" '
        f'style="width: 100%"></audio>'
        f'<div class="ms-clip-info">{esc(name)} · plays in a loop</div></div>'
    )


def measured_text(record: RunRecord) -> str:
    """The loop's measured tempo and key, beside the asked tempo ("" before it is measured)."""
    heard = [f"{record.bpm:.1f} BPM" if record.bpm is not None else "", record.key or ""]
    heard = [h for h in heard if h]
    return f" (measured {', '.join(heard)})" if heard else ""


def loop_facts_html(record: RunRecord) -> str:
    compose = record.compose or {}
    rate = compose.get("sample_rate")
    rows = [
        ("Tempo", f"{float(compose.get('bpm') or 0):g} BPM, 4/4" + measured_text(record)),
        ("Bars", str(compose.get("bars"))),
        (
            "Length",
            f"{seconds_text(record.audio_seconds)} ({compose.get('frames')} samples at {rate} Hz)",
        ),
        ("Starts at", f"{compose.get('downbeat_seconds')} s of the take"),
        ("Seed used", str(record.seed if record.seed is not None else "not reported")),
        ("Take", str(compose.get("source_run") or "–")),
    ]
    cells = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="ms-facts" data-run="{esc(record.id)}">{cells}</table>'


class LoopHandlers:
    """Make loop / Cancel for every visitor; holds no visitor state."""

    def __init__(self, studio: Studio, view: LoopView):
        self.studio = studio
        self.view = view
        self.maker = LoopMaker(studio.service, studio.library)
        self.cache = FormatCache(studio.library)

    def outputs(self) -> list[gr.components.Component]:
        v = self.view
        return [
            v.errors,
            v.make,
            v.cancel,
            v.status,
            v.progress,
            v.logs,
            v.player,
            v.facts,
            v.current,
            v.last,
        ]

    def _buttons(self, *, running: bool) -> Updates:
        return {
            self.view.make: gr.update(interactive=not running),
            self.view.cancel: gr.update(interactive=running),
        }

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
        try:
            request, spec = await asyncio.to_thread(self.maker.prepare, values, bpm, bars, engine)
        except RequestInvalid as err:
            yield {v.errors: errors_html(err.errors), v.status: status_html("idle")}
            return
        yield {
            v.errors: "",
            v.status: status_html("validating"),
            v.progress: progress_html(None, None),
            v.logs: "",
            **self._buttons(running=True),
        }
        logs: list[str] = []
        progress: Progress | None = None
        last: RunUpdate | None = None
        link = engine != LOCAL
        updates = self.maker.make(
            request,
            spec,
            token=self.studio.token(token_value),
            owner=owner,
            engine=engine,
            payer=visitor.payer,
        )
        try:
            async for update in updates:
                last = update
                logs.extend(update.new_logs)
                progress = update.progress or progress
                yield {
                    v.status: status_html(
                        update.status,
                        elapsed=update.elapsed,
                        prediction_id=update.prediction_id if link else None,
                        error=update.error,
                        queue_position=update.queue_position,
                    ),
                    v.progress: progress_html(progress.done, progress.total)
                    if progress
                    else progress_html(None, None),
                    v.logs: "\n".join(logs[-LOG_LINES_SHOWN:]),
                    v.current: update.run_id,
                }
        except GeneratorExit:
            await cancel_inner(updates)
            raise
        except StudioError as err:
            yield {
                v.errors: message_html(str(err)),
                v.status: status_html("idle"),
                v.current: None,
                **self._buttons(running=False),
            }
            return
        finally:
            with contextlib.suppress(Exception):
                await updates.aclose()
        yield await self._finished(last, owner, progress)

    async def _finished(
        self, last: RunUpdate | None, owner: str | None, progress: Progress | None
    ) -> Updates:
        v = self.view
        done = {v.current: None, **self._buttons(running=False)}
        record = self.studio.library.get(last.run_id, owner) if last and last.run_id else None
        if last is None or last.status != "succeeded" or record is None or not record.has_audio:
            return {
                v.status: status_html(
                    last.status if last else "failed",
                    elapsed=last.elapsed if last else None,
                    error=(last.error if last else "The loop ended without news."),
                ),
                **done,
            }
        folder = self.studio.files.staging_dir()
        named = await asyncio.to_thread(self.cache.deliver, record, "wav", folder)
        cached = await asyncio.to_thread(v.player.move_resource_to_block_cache, named)
        total = progress.total if progress else None
        return {
            v.status: status_html("succeeded", elapsed=last.elapsed),
            v.progress: progress_html(total, total),
            v.player: player_html(file_url(str(cached)), named.name, record.id),
            v.facts: loop_facts_html(record),
            v.last: {"run_id": record.id},
            **done,
        }

    async def cancel_pressed(self, run_id: str | None, owner_value: Any) -> Updates:
        """Cancel the loop's take now; Gradio then also cancels the event."""
        return cancel_now(self.studio, run_id, owner_value, self.view.status, self.view.cancel)

    async def after_cancel(self, run_id: str | None, owner_value: Any) -> Updates:
        """Cancel was pressed: wait until the loop entry is recorded as ended, then say so."""
        return {
            self.view.status: await ended_status(self.studio, run_id, owner_value),
            self.view.current: None,
            **self._buttons(running=False),
        }


def build_loop(studio: Studio, *, owner: gr.components.Component) -> LoopView:
    """The "Loop" panel (inside the current Blocks context); wire it with `wire_loop`."""
    with gr.Accordion("Loop: a seamless loop for your DAW", open=False, elem_id="loop-box"):
        gr.HTML(
            '<div class="ms-clip-info">Uses the prompt and settings above. The tempo goes '
            "into the prompt; the loop is cut to whole 4/4 bars on a downbeat and its end "
            "blends into its start.</div>"
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
        progress = gr.HTML(progress_html(None, None), elem_id="loop-progress")
        with gr.Accordion("Loop logs", open=False):
            logs = gr.Textbox(
                label="Logs", lines=6, max_lines=12, interactive=False, elem_id="loop-logs"
            )
        player = gr.HTML(IDLE, elem_id="loop-player")
        facts = gr.HTML("", elem_id="loop-facts")
        last = gr.State(None)
        formats = build_format_buttons(studio, owner=owner, run=last, prefix="loop")
    return LoopView(
        bpm=bpm,
        bars=bars,
        plan=plan,
        make=make,
        cancel=cancel,
        errors=errors,
        status=status,
        progress=progress,
        logs=logs,
        player=player,
        facts=facts,
        formats=formats,
        current=gr.State(None),
        last=last,
    )


def wire_loop(
    studio: Studio,
    view: LoopView,
    *,
    owner: gr.components.Component,
    token: gr.components.Component,
    run_inputs: list[gr.components.Component],
) -> Any:
    """Make loop and Cancel; `run_inputs` are the engine, the local model and the form's
    request components. Returns the make event (to refresh the history after it)."""
    handlers = LoopHandlers(studio, view)
    for slider in (view.bpm, view.bars):
        slider.change(plan_html, [view.bpm, view.bars], [view.plan], **PRIVATE)
    making = view.make.click(
        handlers.make,
        [owner, token, view.bpm, view.bars, *run_inputs],
        handlers.outputs(),
        concurrency_limit=LOOP_CONCURRENCY,
        concurrency_id="loop",
        trigger_mode="once",
        **PRIVATE,
    )
    view.cancel.click(
        handlers.cancel_pressed,
        [view.current, owner],
        [view.status, view.cancel],
        cancels=[making],
        queue=False,
        **PRIVATE,
    ).then(
        handlers.after_cancel,
        [view.current, owner],
        [view.status, view.current, view.make, view.cancel],
        **PRIVATE,
    )
    return making


# -- the /loop endpoint ------------------------------------------------------------------------


class LoopApi:
    """`loop(...)`: /generate's parameters plus `bpm` and `bars`."""

    def __init__(self, studio: Studio):
        self.studio = studio
        self.maker = LoopMaker(studio.service, studio.library)
        self.cache = FormatCache(studio.library)

    async def loop(self, named: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """Make a loop to its end; returns (the loop's WAV named with bpm and bars, record)."""
        raw = {name: named.get(name) for name in REQUEST_PARAMETERS}
        bpm, bars, api_token = named.get("bpm"), named.get("bars"), named.get("api_token")
        visitor = self.studio.api_visitor()
        owner = visitor.owner
        engine = named.get("engine")
        last = None
        with api_errors():
            request, spec = await asyncio.to_thread(self.maker.prepare, raw, bpm, bars, engine)
            async for update in self.maker.make(
                request,
                spec,
                token=self.studio.token(api_token),
                owner=owner,
                engine=engine,
                payer=visitor.payer,
            ):
                last = update
        if last is None or last.run_id is None:
            raise gr.Error("The loop ended without a result.")
        record = api_record(
            loop_summary(self.studio.service, self.studio.library, last.run_id, owner), owner
        )
        entry = self.studio.library.get(last.run_id, owner)
        if entry is None or not entry.has_audio:
            return None, record
        named = await asyncio.to_thread(
            self.cache.deliver, entry, "wav", self.studio.files.staging_dir()
        )
        record["file_name"] = named.name
        return str(named), record


LOOP_DOC = docstring(
    "Make a seamless loop for a DAW: a take at the given tempo, cut to whole 4/4 bars on a "
    "downbeat, its end blended into its start. Refused inputs raise an error naming each "
    "field; nothing is sent then.",
    [*REQUEST_PARAMETERS, "engine", "bpm", "bars", "api_token"],
    {
        "duration": "Ignored: the take is as long as the bars need (at most 30 s).",
        "output_format": "Ignored for the loop itself, which is always WAV (sample-exact).",
        "bpm": f"The tempo in beats per minute, from {BPM_MIN:g} to {BPM_MAX:g}.",
        "bars": f"How many bars of 4/4, a whole number from {BARS_MIN} to {BARS_MAX}.",
    },
    "The loop's WAV file (named with its bpm and bars), and its record: library_id, status, "
    "seed, bpm, bars, source_run (the raw take), compose, file_name, error.",
)


def build_loop_api(studio: Studio) -> None:
    """Hidden inputs and outputs of `/loop`: /generate's, then `bpm` and `bars`."""
    api = LoopApi(studio)
    with gr.Column(visible=False):
        inputs = [
            *model_input_components(),
            # No minimum/maximum: our validation then names the field in its refusal.
            gr.Number(120, label="bpm", info="40-240"),
            gr.Number(2, label="bars", info="1-16 bars of 4/4"),
            *token_components(studio),
        ]
        outputs = [gr.Audio(label="loop", type="filepath"), gr.JSON(label="record")]
    gr.on(
        triggers=[],
        fn=request_endpoint(api.loop, {"bpm": None, "bars": None}, LOOP_DOC),
        inputs=inputs,
        outputs=outputs,
        api_name="loop",
        api_description=DESCRIPTION,
        show_progress="hidden",
    )
