"""Arrange a song in sections: each with its own prompt and length, shown as one track.

The sections are typed one per line, `name | prompt | seconds` (a JSON list works too). The
song is made by `services.compose.arrange.Arranger`; its sections are marked on the track with
the same view as Extend's parts. Any section can be made again (the song from there on).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import gradio as gr

from services.compose.arrange import Arranger, section_spans
from services.compose.extend import ExtendUpdate
from services.cost import FREE
from services.errors import RequestInvalid, StudioError
from services.library import RunRecord
from ui.compose_extend import end_message, overlap_slider
from ui.context import Studio
from ui.engine_picker import model_for
from ui.events import PRIVATE, Updates
from ui.form_rules import form_values, request_values
from ui.formatting import errors_html, esc, message_html, progress_html, seconds_text
from ui.inputs import WAVEFORM
from ui.run_slots import run_slots
from ui.run_stream import RunButtons, Stream, stream
from ui.selection import Selection
from ui.take_audio import TakeAudio

EXAMPLE_SECTIONS = (
    "intro | soft felt piano, warm, slow | 8\n"
    "verse | piano and brushed drums, upright bass | 16\n"
    "chorus | full band, bright synth lead, driving drums | 16\n"
    "outro | soft felt piano fading out | 8"
)


@dataclass
class ArrangeView:
    """The Arrange panel's components."""

    panel: gr.Accordion
    sections: gr.Textbox
    overlap: gr.Slider
    from_result: gr.Checkbox
    cost: gr.HTML
    arrange: gr.Button
    cancel: gr.Button
    resume: gr.Button
    redo_from: gr.Dropdown
    redo: gr.Button
    status: gr.HTML
    track_sections: gr.HTML
    track: gr.Audio
    song: gr.State  # the song shown: its library id


def sections_from_text(text: str | None) -> Any:
    """The sections typed in the box, for `parse_sections`: one per line,
    `name | prompt | seconds` (or `prompt | seconds`); a JSON list is passed on as it is."""
    text = (text or "").strip()
    if text.startswith("["):
        return text
    sections: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split("|")]
        seconds: Any = cells.pop().rstrip("sS ").strip() if len(cells) > 1 else None
        name = cells.pop(0) if len(cells) > 1 else ""
        sections.append({"name": name, "prompt": " | ".join(cells), "seconds": seconds})
    return sections


def sections_text(record: RunRecord) -> str:
    """A song's sections, one per line, as the box takes them."""
    return "\n".join(f"{s['name']} | {s['prompt']} | {s['seconds']}" for s in section_spans(record))


def parts_html(
    record_compose: Mapping[str, Any] | None,
    spans: list[dict[str, Any]],
    *,
    bar_id: str = "ms-song-bar",
) -> str:
    """One bar with a segment per stretch of the song: who made which seconds, under which
    prompt. A span's `label` names it (a section), else "original" / "part N"."""
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
    target = float((record_compose or {}).get("target_seconds") or 0)
    note = ""
    if state == "interrupted" and target > total:
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


def song_html(record: RunRecord) -> str:
    """The song's track with its sections marked (the ones made so far)."""
    spans = [
        {
            "part": s["section"],
            "label": s["name"],
            "prompt": s["prompt"],
            "start": s["start"],
            "end": s["end"],
            "prediction_id": (s["prediction_ids"] or [None])[0],
        }
        for s in section_spans(record)
        if s["run"]
    ]
    source = (record.compose or {}).get("source")
    if source:  # the result the song started from
        spans.insert(0, {**source, "part": 0, "label": "start", "prompt": ""})
    return parts_html(record.compose, spans, bar_id="ms-song-bar")


def _progress(update: ExtendUpdate, names: list[str]) -> str:
    run = update.run
    progress = run.progress if run else None
    section = update.section
    what = ""
    if section is not None and section < len(names):
        what = f"Section {section + 1} of {len(names)} ({esc(names[section])}) · "
    head = (
        f'<div class="ms-part-of" data-section="{section if section is not None else ""}">'
        f"{what}part {update.part} of {update.parts}</div>"
    )
    return head + progress_html(
        progress.done if progress else None, progress.total if progress else None
    )


def build_arrange(studio: Studio) -> ArrangeView:
    """Lay out the panel (inside the current Blocks context)."""
    with gr.Accordion("Arrange a song in sections", open=False, elem_id="arrange-panel") as panel:
        gr.HTML(
            '<div class="ms-muted">One section per line: <code>name | prompt | seconds</code>. '
            "The first section opens the song; each next one continues it under its own "
            "prompt. The form's model and settings are used.</div>"
        )
        sections = gr.Textbox(
            EXAMPLE_SECTIONS, lines=4, max_lines=24, label="Sections",
            elem_id="arrange-sections",
        )  # fmt: skip
        overlap = overlap_slider("arrange-overlap")
        from_result = gr.Checkbox(
            False,
            label="Start from the result shown (the first section continues it)",
            elem_id="arrange-from-result",
        )
        cost = gr.HTML("", elem_id="arrange-cost")
        with gr.Row():
            arrange = gr.Button("Arrange", variant="primary", elem_id="arrange-btn", scale=2)
            cancel = gr.Button(
                "Stop", variant="stop", interactive=False, elem_id="arrange-cancel", scale=1
            )
            resume = gr.Button("Resume", interactive=False, elem_id="arrange-resume", scale=1)
        with gr.Row():
            redo_from = gr.Dropdown(
                [], label="Make again from section", interactive=True,
                elem_id="arrange-redo-from", scale=2,
            )  # fmt: skip
            redo = gr.Button("Make again", interactive=False, elem_id="arrange-redo", scale=1)
        status = gr.HTML("", elem_id="arrange-status")
        track_sections = gr.HTML("", elem_id="arrange-track-sections")
        track = TakeAudio(
            type="filepath", label="The song", interactive=False, waveform_options=WAVEFORM,
            buttons=["download"], elem_id="arrange-track",
        )  # fmt: skip
    return ArrangeView(
        panel, sections, overlap, from_result, cost, arrange, cancel, resume, redo_from, redo,
        status, track_sections, track, gr.State(None),
    )  # fmt: skip


class ArrangeHandlers:
    """Arrange, Stop, Resume and Make again; one instance serves every visitor."""

    def __init__(self, studio: Studio, view: ArrangeView, arranger: Arranger, last_run: gr.State):
        self.studio = studio
        self.view = view
        self.arranger = arranger
        self.last_run = last_run  # the result shown: a finished song becomes it
        self.buttons = RunButtons(view.arrange, view.cancel)

    def outputs(self) -> list[gr.components.Component]:
        v = self.view
        return [
            v.status, v.track_sections, v.track, v.song, v.redo_from, v.sections,
            v.arrange, v.cancel, v.resume, v.redo, self.last_run,
        ]  # fmt: skip

    def _buttons(self, *, running: bool, record: RunRecord | None = None) -> Updates:
        """Arrange and Stop by whether a song is being made; Resume (while sections are left)
        and Make again once there is a song to work on."""
        v = self.view
        out: Updates = {
            v.arrange: gr.update(interactive=not running),
            v.cancel: gr.update(interactive=running),
        }
        if running:
            out[v.resume] = out[v.redo] = gr.update(interactive=False)
        elif record is not None:
            left = any(not s["made"] for s in section_spans(record))
            out.update({v.resume: gr.update(interactive=left), v.redo: gr.update(interactive=True)})
        return out

    def cost(self, text: str, overlap: float, engine: Any, model_version: Any) -> str:
        """What the whole song should cost on Replicate ("" on this machine or while the
        sections are not readable yet)."""
        try:
            runs, estimate = self.arranger.estimate(
                sections_from_text(text), overlap, str(model_version or ""), engine or None
            )
        except (StudioError, TypeError, ValueError):
            return ""
        if estimate.basis == FREE:
            return ""
        return f'<p class="ms-cost">The whole song, {runs} run(s): {esc(estimate.text)}</p>'

    def _song(self, record: RunRecord) -> Updates:
        """The song as the result: its track, its sections, and Make again's choices."""
        v = self.view
        spans = section_spans(record)
        choices = [(f"{s['section']} · {s['name']}", s["section"]) for s in spans]
        out: Updates = {
            v.song: record.id,
            v.track_sections: song_html(record),
            v.redo_from: gr.update(choices=choices, value=choices[0][1] if choices else None),
            v.sections: sections_text(record),
        }
        if record.has_audio:
            snapshot = self.studio.snapshot(record)
            out[v.track] = snapshot["audio_path"]
            out[self.last_run] = snapshot
        return out

    def show_song(self, snap: dict[str, Any] | None, owner_value: Any) -> Updates:
        """A song opened as the result (e.g. from the history) is shown here to work on."""
        run_id = (snap or {}).get("run_id")
        record = self.studio.library.get(run_id, self.studio.owner(owner_value)) if run_id else None
        if record is None or record.kind != "song":
            return {}
        out = self._song(record)
        out.pop(self.last_run, None)  # it is the result already
        return {**out, **self._buttons(running=False, record=record)}

    async def _follow(
        self, updates: AsyncIterator[ExtendUpdate], owner: str | None
    ) -> AsyncIterator[Updates]:
        """Each change of a song being made, then the song as it ended (one run stream;
        `updates` is lazy: nothing is sent before the stream reads it)."""
        v = self.view
        names: list[str] = []

        async def prepare() -> None:
            return None

        def begin(_prepared: None) -> Updates:
            return {v.status: "", **self._buttons(running=True)}

        def show(update: ExtendUpdate, _elapsed: float) -> Updates:
            if not names:
                record = self.studio.library.get(update.entry_id, owner)
                if record is not None:
                    names.extend(span["name"] for span in section_spans(record))
            return {v.status: _progress(update, names), v.song: update.entry_id}

        async def finish(last: ExtendUpdate | None, _elapsed: float) -> Updates:
            if last is None:
                return {}
            out: Updates = {v.status: end_message(last, "Done: the song is in your history.")}
            record = self.studio.library.get(last.entry_id, owner)
            if record is not None:
                out.update({**self._song(record), **self._buttons(running=False, record=record)})
            return out

        def refused(err: RequestInvalid) -> Updates:
            return {v.status: errors_html(err.errors)}

        def failed(err: StudioError, _last: ExtendUpdate | None) -> Updates:
            return {v.status: message_html(str(err))}

        how = Stream(self.buttons, prepare, lambda _: updates, begin, show, finish, refused, failed)
        async for changes in stream(how):
            yield changes

    async def arrange(
        self,
        owner_value: Any,
        token_value: Any,
        text: str,
        overlap: float,
        from_result: bool,
        snap: dict[str, Any] | None,
        engine: str | None,
        local_model: str | None,
        *form: Any,
    ) -> AsyncIterator[Updates]:
        """Make a new song from the sections typed, under the form's settings (starting from
        the result shown, when asked)."""
        visitor = self.studio.visitor(owner_value)
        owner = visitor.owner
        values = request_values(form_values(form))
        model_for(engine, local_model, values)
        sections = sections_from_text(text)
        token = self.studio.token(token_value)
        # No result shown: "-" is refused, naming the result to start from.
        from_run = ((snap or {}).get("run_id") or "-") if from_result else None
        updates = self.arranger.arrange(
            sections,
            values,
            token=token,
            owner=owner,
            payer=visitor.payer,
            overlap=overlap,
            engine=engine,
            from_run=from_run,
        )
        async for out in self._follow(updates, owner):
            yield out

    async def resume(
        self, owner_value: Any, token_value: Any, song: str | None
    ) -> AsyncIterator[Updates]:
        """Go on with the song shown."""
        visitor = self.studio.visitor(owner_value)
        owner = visitor.owner
        updates = self.arranger.resume(
            song or "", token=self.studio.token(token_value), owner=owner, payer=visitor.payer
        )
        async for out in self._follow(updates, owner):
            yield out

    async def redo(
        self,
        owner_value: Any,
        token_value: Any,
        song: str | None,
        section: Any,
        text: str,
    ) -> AsyncIterator[Updates]:
        """Make the song shown again from the chosen section on (with the sections typed)."""
        visitor = self.studio.visitor(owner_value)
        owner = visitor.owner
        updates = self.arranger.redo(
            song or "",
            section,
            sections=sections_from_text(text),
            token=self.studio.token(token_value),
            owner=owner,
            payer=visitor.payer,
        )
        async for out in self._follow(updates, owner):
            yield out

    def after_stop(self, song: str | None, owner_value: Any) -> Updates:
        """Stop was pressed: the sections made so far stay; show the song as it is."""
        v = self.view
        record = self.studio.library.get(song, self.studio.owner(owner_value)) if song else None
        if record is None:
            return {v.status: message_html("Stopped.", kind="info"), **self._buttons(running=False)}
        return {
            v.status: message_html(
                "Stopped: every section made so far is kept. Press Resume to go on.",
                kind="info",
            ),
            **self._song(record),
            **self._buttons(running=False, record=record),
        }


def wire_arrange(
    handlers: ArrangeHandlers,
    *,
    selection: Selection,
    owner: gr.components.Component,
    token: gr.components.Component,
    run_inputs: list[gr.components.Component],
    engine: gr.Radio,
    model_version: gr.Radio,
) -> list[Any]:
    """Connect the panel. `run_inputs`: the engine, the local model and the form's components
    (as Variations takes them). Returns the events that make songs (the history refreshes)."""
    v, last_run = handlers.view, handlers.last_run
    outputs = handlers.outputs()
    gr.on(
        triggers=[
            v.panel.expand,
            v.sections.change,
            v.overlap.change,
            engine.change,
            model_version.change,
        ],
        fn=handlers.cost,
        inputs=[v.sections, v.overlap, engine, model_version],
        outputs=[v.cost],
        queue=False,
        # One estimate at a time, and always one more with the newest values: with the default
        # ("once") a change made while the panel's opening estimate was pending was dropped.
        trigger_mode="always_last",
        **PRIVATE,
    )
    song = [v.song, v.track_sections, v.redo_from, v.sections, v.track, v.arrange, v.cancel]
    selection.watch(handlers.show_song, [last_run, owner], [*song, v.resume, v.redo])
    run: dict[str, Any] = {
        **run_slots(handlers.studio.settings),
        "trigger_mode": "once",
    }
    made = v.arrange.click(
        handlers.arrange,
        [owner, token, v.sections, v.overlap, v.from_result, last_run, *run_inputs],
        outputs,
        **run,
        **PRIVATE,
    )
    resumed = v.resume.click(handlers.resume, [owner, token, v.song], outputs, **run, **PRIVATE)
    redone = v.redo.click(
        handlers.redo,
        [owner, token, v.song, v.redo_from, v.sections],
        outputs,
        **run,
        **PRIVATE,
    )
    events: list[Any] = [made, resumed, redone]
    v.cancel.click(None, None, None, cancels=events, queue=False, **PRIVATE).then(
        handlers.after_stop, [v.song, owner], outputs, **PRIVATE
    )
    return events
