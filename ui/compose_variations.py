"""Variations: N takes of the form's request at once, side by side, each with its seed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import gradio as gr
from gradio.blocks import Block

from services.compose.variations import MAX_TAKES, MIN_TAKES, Variations, VariationUpdate
from services.errors import RequestInvalid, StudioError
from services.generation import PreparedRun
from services.library import RunRecord
from ui.context import Studio
from ui.engine_picker import model_for
from ui.events import PRIVATE, Updates
from ui.form_rules import form_values, request_values
from ui.formatting import errors_html, esc, message_html
from ui.inputs import WAVEFORM
from ui.reuse import Reuse
from ui.run_slots import run_slots
from ui.run_stream import RunButtons, Stream, stream, wire_stream
from ui.take_audio import TakeAudio
from ui.track import file_url

STATUS_WORDS = {
    "creating": "starting",
    "preparing": "starting",
    "starting": "queued",
    "processing": "generating",
    "succeeded": "done",
}


@dataclass
class Slot:
    """One take's place in the grid."""

    box: gr.Column
    label: gr.HTML
    audio: gr.Audio
    keep: gr.Button
    melody: gr.Button
    extend: gr.Button
    again: gr.Button


@dataclass
class VariationsView:
    panel: gr.Accordion
    n: gr.Slider
    make: gr.Button
    cancel: gr.Button
    status: gr.HTML
    slots: list[Slot]
    group: gr.State  # {"group_id": ..., "runs": [run id or None per slot]}


def slot_label(
    slot: int, seed: int | None, status: str, detail: str = "", audio: str | None = None
) -> str:
    """One take's line; `audio` is where its file is served (kept for checks and scripts)."""
    word = STATUS_WORDS.get(status, status)
    seed_text = f"seed {seed}" if seed is not None else "seed …"
    return (
        f'<div class="ms-take" data-slot="{slot}" data-status="{esc(status)}" '
        f'data-seed="{esc(seed if seed is not None else "")}" '
        f'data-audio="{esc(file_url(audio) if audio else "")}"><b>Take {slot + 1}</b> · '
        f"{esc(seed_text)} · {esc(word)}{esc(detail)}</div>"
    )


def build_variations() -> VariationsView:
    """Lay out the panel (inside the current Blocks context)."""
    with gr.Accordion(
        "Variations: several takes at once", open=False, elem_id="variations-panel"
    ) as panel:
        with gr.Row():
            n = gr.Slider(
                MIN_TAKES, MAX_TAKES, value=3, step=1, label="Takes", elem_id="variations-n"
            )
            make = gr.Button(
                "Make variations", variant="primary", elem_id="variations-btn", scale=2
            )
            cancel = gr.Button(
                "Cancel all", variant="stop", interactive=False, elem_id="variations-cancel"
            )
        status = gr.HTML("", elem_id="variations-status")
        slots: list[Slot] = []
        with gr.Row(elem_id="variations-grid", elem_classes=["ms-grid"]):
            for i in range(MAX_TAKES):
                with gr.Column(
                    visible=False, min_width=240, elem_id=f"take-{i}", elem_classes=["ms-card"]
                ) as box:
                    label = gr.HTML(slot_label(i, None, "waiting"), elem_id=f"take-{i}-label")
                    audio = TakeAudio(
                        type="filepath", show_label=False, interactive=False,
                        waveform_options=WAVEFORM, buttons=[],
                        elem_id=f"take-{i}-audio",
                    )  # fmt: skip
                    with gr.Row():
                        keep = gr.Button("☆ Keep", size="sm", elem_id=f"take-{i}-keep")
                        melody = gr.Button("Use as melody", size="sm", elem_id=f"take-{i}-melody")
                        extend = gr.Button("Continue", size="sm", elem_id=f"take-{i}-continue")
                        again = gr.Button("Regenerate", size="sm", elem_id=f"take-{i}-again")
                slots.append(Slot(box, label, audio, keep, melody, extend, again))
    return VariationsView(panel, n, make, cancel, status, slots, gr.State(None))


class VariationsHandlers:
    """Make, cancel and act on variations; one instance serves every visitor."""

    def __init__(self, studio: Studio, view: VariationsView, variations: Variations):
        self.studio = studio
        self.view = view
        self.variations = variations
        self.buttons = RunButtons(view.make, view.cancel)

    def outputs(self) -> list[Block]:
        v = self.view
        per_slot = [c for s in v.slots for c in (s.box, s.label, s.audio, s.keep, s.again)]
        return [v.status, v.make, v.cancel, v.group, *per_slot]

    def _show(self, update: VariationUpdate, runs: list[str | None]) -> Updates:
        """One take's change: its label, and its audio once it is filed."""
        if update.slot is None or update.run is None:
            return {}
        slot, run = self.view.slots[update.slot], update.run
        detail = ""
        if run.progress is not None and not run.finished:
            detail = f" {run.progress.done}/{run.progress.total}"
        if run.error and run.status != "succeeded":
            detail = f": {run.error}"
        if run.run_id:
            runs[update.slot] = run.run_id
        audio = self.studio.files.servable(run.audio_path) if run.status == "succeeded" else None
        out: Updates = {slot.label: slot_label(update.slot, update.seed, run.status, detail, audio)}
        if audio:
            out[slot.audio] = audio
        return out

    async def make(
        self,
        owner_value: Any,
        token_value: Any,
        engine: str | None,
        local_model: str | None,
        n: float,
        *form: Any,
    ) -> AsyncIterator[Updates]:
        v = self.view
        visitor = self.studio.visitor(owner_value)
        owner = visitor.owner
        values = request_values(form_values(form))
        model_for(engine, local_model, values)
        count = int(n)
        runs: list[str | None] = [None] * count

        async def prepare() -> PreparedRun:
            return await asyncio.to_thread(self.studio.service.prepare, values, engine)

        def start(prepared: PreparedRun) -> AsyncIterator[VariationUpdate]:
            return self.variations.run(
                prepared,
                count,
                token=self.studio.token(token_value),
                owner=owner,
                engine=engine,
                payer=visitor.payer,
            )

        def begin(_prepared: PreparedRun) -> Updates:
            layout: Updates = {
                v.status: message_html(f"Making {count} takes at once…", kind="info")
            }
            for i, slot in enumerate(v.slots):
                layout[slot.box] = gr.update(visible=i < count)
                layout[slot.audio] = None
                layout[slot.label] = slot_label(i, None, "waiting")
                layout[slot.keep] = gr.update(value="☆ Keep")
            return layout

        def show(update: VariationUpdate, _elapsed: float) -> Updates:
            out = self._show(update, runs)
            out[v.group] = {"group_id": update.group_id, "runs": list(runs)}
            return out

        async def finish(last: VariationUpdate | None, _elapsed: float) -> Updates:
            if last is None:
                return {}
            # The end shows every take as the library has it, whatever updates the page may
            # have merged on the way.
            out = self._final_slots(last.group_id, owner)
            done = last.status == "succeeded"
            out[v.status] = message_html(
                f"{count} takes made: keep one, use it as a melody, continue it, or make one again."
                if done
                else (last.error or "Not every take ended."),
                kind="info" if done else "error",
            )
            return out

        def refused(err: RequestInvalid) -> Updates:
            return {v.status: errors_html(err.errors)}

        def failed(err: StudioError, _last: VariationUpdate | None) -> Updates:
            return {v.status: message_html(str(err))}

        how = Stream(self.buttons, prepare, start, begin, show, finish, refused, failed)
        async for changes in stream(how):
            yield changes

    def _final_slots(self, group_id: str, owner: str | None) -> Updates:
        """Each take's label and audio from the library, once the group has ended."""
        out: Updates = {}
        group = self.studio.library.get(group_id, owner)
        seeds = list((group.compose or {}).get("seeds") or []) if group else []
        for i, take in enumerate(self.variations.takes(group_id, owner)):
            if take is None or i >= len(self.view.slots):
                continue
            slot = self.view.slots[i]
            seed = take.seed if take.seed is not None else (seeds[i] if i < len(seeds) else None)
            detail = f": {take.error}" if take.error and take.status != "succeeded" else ""
            file = self.studio.library.audio_file(take) if take.has_audio else None
            audio = self.studio.files.servable(file)
            out[slot.label] = slot_label(i, seed, take.status, detail, audio)
            if audio is not None:
                out[slot.audio] = audio
        return out

    def after_cancel(self, group: dict[str, Any] | None, owner_value: Any) -> Updates:
        v = self.view
        idle = self.buttons.state(running=False)
        if group:
            self.variations.settle(group["group_id"], self.studio.owner(owner_value))
        return {v.status: message_html("Canceled every take still running.", kind="info"), **idle}

    def _take(self, group: dict[str, Any] | None, slot: int, owner_value: Any) -> RunRecord | None:
        runs = (group or {}).get("runs") or []
        run_id = runs[slot] if slot < len(runs) else None
        if not run_id:
            return None
        return self.studio.library.get(run_id, self.studio.owner(owner_value))

    def keep(self, slot: int, group: dict[str, Any] | None, owner_value: Any) -> Updates:
        """Keep a take: a favourite in the history."""
        record = self._take(group, slot, owner_value)
        button = self.view.slots[slot].keep
        if record is None:
            return {self.view.status: message_html("That take is not finished yet.")}
        kept = not record.favourite
        self.studio.library.set_favourite(record.id, self.studio.owner(owner_value), kept)
        return {button: gr.update(value="★ Kept" if kept else "☆ Keep")}

    def snapshot(
        self, slot: int, group: dict[str, Any] | None, owner_value: Any
    ) -> dict[str, Any] | None:
        record = self._take(group, slot, owner_value)
        return self.studio.snapshot(record) if record is not None else None

    async def again(
        self, slot: int, owner_value: Any, token_value: Any, group: dict[str, Any] | None
    ) -> AsyncIterator[Updates]:
        """Make one take again, with a new seed."""
        v = self.view
        if not group:
            yield {v.status: message_html("Make variations first.")}
            return
        runs = list(group.get("runs") or [])
        group_id = str(group["group_id"])

        async def prepare() -> None:
            return None

        def start(_prepared: None) -> AsyncIterator[VariationUpdate]:
            visitor = self.studio.visitor(owner_value)
            return self.variations.regenerate(
                group_id,
                slot,
                token=self.studio.token(token_value),
                owner=visitor.owner,
                payer=visitor.payer,
            )

        def show(update: VariationUpdate, _elapsed: float) -> Updates:
            out = self._show(update, runs)
            out[v.group] = {"group_id": group_id, "runs": list(runs)}
            return out

        async def finish(_last: VariationUpdate | None, _elapsed: float) -> Updates:
            return {}

        def refused(err: RequestInvalid) -> Updates:
            return {v.status: errors_html(err.errors)}

        def failed(err: StudioError, _last: VariationUpdate | None) -> Updates:
            return {v.status: message_html(str(err))}

        # This slot's Regenerate waits while its take is made; "Cancel all" stops it.
        buttons = RunButtons(v.slots[slot].again, v.cancel)
        how = Stream(buttons, prepare, start, lambda _p: {}, show, finish, refused, failed)
        async for changes in stream(how):
            yield changes


def wire_variations(
    handlers: VariationsHandlers,
    *,
    owner: gr.components.Component,
    token: gr.components.Component,
    run_inputs: list[gr.components.Component],
    reuse: Reuse,
    model_version: gr.components.Component,
    last_run: gr.State,
) -> list[Any]:
    """Connect the panel; `run_inputs` are the engine, local model and form components.

    Returns the events after which the history refreshes.
    """
    v = handlers.view
    agains = []
    for i, slot in enumerate(v.slots):
        slot.keep.click(partial(handlers.keep, i), [v.group, owner], handlers.outputs(), **PRIVATE)
        slot.melody.click(
            partial(handlers.snapshot, i), [v.group, owner], [last_run], **PRIVATE
        ).then(reuse.as_melody, [last_run, model_version], reuse.outputs(), **PRIVATE)
        slot.extend.click(
            partial(handlers.snapshot, i), [v.group, owner], [last_run], **PRIVATE
        ).then(reuse.continue_from, [last_run], reuse.outputs(), **PRIVATE)
        agains.append(
            slot.again.click(
                partial(handlers.again, i),
                [owner, token, v.group],
                handlers.outputs(),
                **run_slots(handlers.studio.settings),
                **PRIVATE,
            )
        )
    make, stopped = wire_stream(
        handlers.buttons,
        handlers.make,
        [owner, token, run_inputs[0], run_inputs[1], v.n, *run_inputs[2:]],
        handlers.outputs(),
        **run_slots(handlers.studio.settings),
        after_stop=(handlers.after_cancel, [v.group, owner]),
        also_cancels=agains,
    )
    return [make, stopped, *agains]
