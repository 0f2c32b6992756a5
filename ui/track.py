"""The selected result as a track: one player, its parts marked, its facts, its actions.

Whatever the visitor made or opened last (a take, a piece, a loop, a variations group, a song,
a stem) is shown here: the live run streams into this same place and becomes the result; a
reload shows the visitor's latest result. All of a result's actions are in one place: Extend,
Loop, Variations, Use as melody, Continue, Download (one click, in the chosen format), Favourite
and Delete (with a short Undo).

The seam for more actions (stems, MIDI, DAW export, Arrange): `EXTRA_PANELS`. Each entry is a
function that receives a `TrackSeam` (above all `seam.selected`, the gr.State holding the
selected result's snapshot, `{"run_id": ...}`) and lays out its own controls inside the track's
"More for this result" area; it returns the events after which the history should refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import gradio as gr

from services.compose.extend import parts_summary
from services.compose.formats import FORMATS, FormatCache
from services.engines.protocol import LOCAL
from services.errors import StudioError
from services.library import RunRecord
from services.library.records import RUN_KINDS
from services.settings import DEFAULT_BASE_URL
from ui.context import Studio
from ui.events import PRIVATE, Updates
from ui.formatting import date_text, esc, message_html, model_text, replicate_url
from ui.kinds import badge_text, tempo_key
from ui.schema_once import TakeDownload
from ui.selection import Selection

UNDO_SECONDS = 10.0
EMPTY_FACTS = '<div class="ms-muted" id="track-empty">Your take will play here.</div>'


@dataclass
class TrackActions:
    """The selected result's actions, in one place."""

    extend: gr.Button
    loop: gr.Button
    variations: gr.Button
    use_as_melody: gr.Button
    continue_this: gr.Button
    reuse_settings: gr.Button
    reuse_seed: gr.Button
    fmt: gr.Radio
    download: TakeDownload
    favourite: gr.Button
    delete: gr.Button

    def buttons(self) -> list[gr.components.Component]:
        return [
            self.extend,
            self.loop,
            self.variations,
            self.use_as_melody,
            self.continue_this,
            self.reuse_settings,
            self.reuse_seed,
            self.favourite,
            self.delete,
        ]


@dataclass
class UndoBar:
    """ "Deleted “…” · Undo": shown for UNDO_SECONDS after a Delete, wherever it was pressed."""

    row: gr.Row
    text: gr.HTML
    undo: gr.Button
    pending: gr.State  # {"run_id"} of the delete that can still be undone
    timer: gr.Timer  # hides the bar once the delete has happened


@dataclass(frozen=True)
class TrackSeam:
    """What a panel plugged into the track receives."""

    studio: Studio
    selected: gr.State  # the selected result's snapshot ({"run_id": ...}) or None
    owner: gr.components.Component
    token: gr.components.Component


# Panels that attach to the selected result (stems, MIDI, DAW export, Arrange plug in here).
TrackPanel = Callable[[TrackSeam], Sequence[Any]]
EXTRA_PANELS: tuple[TrackPanel, ...] = ()


def build_extras(seam: TrackSeam, panels: Sequence[TrackPanel] = EXTRA_PANELS) -> list[Any]:
    """Lay out every extra panel of the selected result; the events to refresh history after."""
    events: list[Any] = []
    if not panels:
        return events
    with gr.Column(elem_id="track-extras"):
        for panel in panels:
            events.extend(panel(seam))
    return events


# -- what the track shows ---------------------------------------------------------------------


def _segments_html(segments: list[tuple[str, float, float]], kind: str) -> str:
    """A bar over the waveform, one segment per part, section or bar."""
    total = max((end for _, _, end in segments), default=0.0) or 1.0
    cells = "".join(
        f'<div class="ms-part ms-part-{i % 2}" style="width:{100.0 * (end - start) / total:.2f}%" '
        f'data-part="{i}" data-start="{start:.2f}" data-end="{end:.2f}" '
        f'title="{esc(label)}: {start:.1f}–{end:.1f} s">{esc(label)}</div>'
        for i, (label, start, end) in enumerate(segments)
    )
    return f'<div class="ms-parts ms-marks-{esc(kind)}" id="ms-parts-bar">{cells}</div>'


def marks_html(record: RunRecord) -> str:
    """The parts of a piece, the sections of a song, the bars of a loop, marked on the track."""
    compose = record.compose or {}
    segments: list[tuple[str, float, float]] = []
    if record.kind == "extend":
        for span in parts_summary(record):
            label = "original" if span["part"] == 0 else f"part {span['part']}"
            segments.append((label, float(span.get("start") or 0), float(span.get("end") or 0)))
    elif record.kind in ("song", "arrange"):
        at = 0.0
        for i, section in enumerate(compose.get("sections") or []):
            if not isinstance(section, dict):
                continue
            start = float(section.get("start", at) or 0)
            end = float(section.get("end", start + float(section.get("seconds") or 0)) or 0)
            segments.append((str(section.get("name") or f"section {i + 1}"), start, end))
            at = end
    elif record.kind == "loop" and compose.get("bars") and record.audio_seconds:
        bars = int(compose["bars"])
        bar = record.audio_seconds / bars
        segments = [(f"bar {i + 1}", i * bar, (i + 1) * bar) for i in range(bars)]
    return _segments_html(segments, record.kind) if segments else ""


def _host(base_url: str) -> str:
    return urlparse(base_url).netloc or base_url


def cost_text(record: RunRecord, base_url: str) -> str:
    """What the run cost, and where it ran (an emulator or another server is no Replicate)."""
    if record.engine == LOCAL:
        return "free (made on this machine)"
    if record.cost_usd is None:
        return "–"
    if base_url.rstrip("/") != DEFAULT_BASE_URL:
        return (
            f"nothing from Replicate: made by {_host(base_url)} "
            f"(${record.cost_usd:.4f} at Replicate's rate)"
        )
    return f"${record.cost_usd:.4f} on Replicate"


def track_facts_html(record: RunRecord, base_url: str, audio_url: str = "") -> str:
    """The result's facts; the run's own ids sit in its closed Details. `audio_url` is where
    the player's file is served (kept on the table for checks and scripts)."""
    local = record.engine == LOCAL
    bpm, key = tempo_key(record)
    rows = [
        ("What", esc(badge_text(record))),
        ("Engine", esc(f"This machine ({record.device})" if local else "Replicate")),
        ("Model", esc(record.checkpoint or model_text(record.model_version))),
        ("Length", esc(f"{record.audio_seconds:.1f} s" if record.audio_seconds else "–")),
    ]
    if bpm is not None:
        rows.append(("Tempo", esc(f"{bpm:.0f} BPM")))
    elif record.kind == "loop" and getattr(record, "bpm", None) is not None:
        # A loop's tempo is the one asked for (in its badge); this is what was heard.
        rows.append(("Measured tempo", esc(f"{float(record.bpm or 0):.1f} BPM")))
    if key:
        rows.append(("Key", esc(key)))
    if record.seed is not None or record.kind in RUN_KINDS:
        rows.append(("Seed", esc(record.seed if record.seed is not None else "not reported")))
    if record.kind in RUN_KINDS:  # a composition's cost is its runs' (see their cards)
        rows.append(("Cost", esc(cost_text(record, base_url))))
    rows.append(("Format", esc(record.audio_format or "–")))
    cells = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    details = [f"Made {esc(date_text(record.created_at))}", f"Run {esc(record.id)}"]
    if record.predict_time is not None:
        details.append(f"Predict time {record.predict_time:.1f} s")
    if record.realtime_factor is not None:
        details.append(f"Real-time factor {record.realtime_factor:.2f}×")
    url = replicate_url(record.prediction_id) if not local else None
    if url:
        details.append(
            f'Prediction <a href="{esc(url)}" target="_blank" rel="noopener">'
            f"{esc(record.prediction_id)}</a>"
        )
    return (
        f'<table class="ms-facts" data-run="{esc(record.id)}" data-audio="{esc(audio_url)}">'
        f"{cells}</table>"
        f'<details class="ms-details"><summary>Details</summary>{" · ".join(details)}</details>'
    )


def takes_html(studio: Studio, record: RunRecord, owner: str | None) -> str:
    """A variations group's takes, each playable inside the group."""
    if record.kind != "variations":
        return ""
    seeds = list((record.compose or {}).get("seeds") or [])
    slots = ((record.compose or {}).get("takes")) or {}
    items = []
    for i in range(len(seeds)):
        take = studio.library.get(str(slots.get(str(i)) or ""), owner) if str(i) in slots else None
        audio = studio.files.servable(studio.library.audio_file(take)) if take else None
        seed = take.seed if take and take.seed is not None else seeds[i]
        player = native_player_html(audio) if audio else '<span class="ms-muted">no audio</span>'
        items.append(
            f'<li class="ms-take-item" data-slot="{i}"><b>Take {i + 1}</b> · seed {esc(seed)}'
            f"{player}</li>"
        )
    return f'<ul class="ms-takes">{"".join(items)}</ul>'


def native_player_html(audio: str, *, loop: bool = False, css: str = "") -> str:
    """The browser's own player for a served file: it fetches the file only once played.

    Where many takes are listed (history cards, a group's takes): a gr.Audio each would have
    Gradio probe every file with ffprobe at each listing, and the browser download every take
    to draw its waveform. The open track keeps the waveform player.
    """
    looping = " loop" if loop else ""
    kind = f' class="{esc(css)}"' if css else ""
    return f'<audio{kind} controls preload="none"{looping} src="{esc(file_url(audio))}"></audio>'


def file_url(path: str) -> str:
    """The page-relative URL Gradio serves a file from."""
    return "gradio_api/file=" + urllib.parse.quote(path)


# -- deletes that can be undone --------------------------------------------------------------


class PendingDeletes:
    """Deletes that wait UNDO_SECONDS before they happen; Undo in time keeps the result.

    One per app (built with the page, not module state). A pending entry is hidden from the
    history and the pickers; a restart before the delete happens keeps the entry (never a loss).
    """

    def __init__(self, studio: Studio):
        self.studio = studio
        self._waiting: dict[str, tuple[str | None, asyncio.TimerHandle]] = {}
        # Listings read `hidden` from worker threads while the event loop adds and removes.
        self._lock = threading.Lock()

    def hidden(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._waiting)

    def delete_later(self, run_id: str, owner: str | None) -> None:
        """Hide the entry now; delete it for good after UNDO_SECONDS (must be on the loop)."""
        loop = asyncio.get_running_loop()
        self.undo(run_id, owner)
        handle = loop.call_later(UNDO_SECONDS, self._commit, run_id)
        with self._lock:
            self._waiting[run_id] = (owner, handle)

    def _commit(self, run_id: str) -> None:
        with self._lock:
            waiting = self._waiting.pop(run_id, None)
        if waiting is None:
            return
        with contextlib.suppress(Exception):  # an entry already gone is fine
            self.studio.library.delete(run_id, waiting[0])

    def undo(self, run_id: str, owner: str | None) -> bool:
        """Keep the entry if its delete has not happened yet (and it is this owner's)."""
        with self._lock:
            waiting = self._waiting.get(run_id)
            if waiting is None or waiting[0] != owner:
                return False
            self._waiting.pop(run_id)
        waiting[1].cancel()
        return True


# -- layout ----------------------------------------------------------------------------------


def build_actions() -> TrackActions:
    """The action rows under the player (inside the current Blocks context)."""
    with gr.Row(elem_classes=["ms-track-actions"], elem_id="track-actions"):
        extend = gr.Button("Extend…", size="sm", interactive=False, elem_id="track-extend")
        loop = gr.Button("Loop…", size="sm", interactive=False, elem_id="track-loop")
        variations = gr.Button(
            "Variations…", size="sm", interactive=False, elem_id="track-variations"
        )
        use_as_melody = gr.Button(
            "Use as melody", size="sm", interactive=False, elem_id="use-as-melody"
        )
        continue_this = gr.Button("Continue", size="sm", interactive=False, elem_id="continue-this")
    with gr.Row(elem_classes=["ms-track-actions"], elem_id="track-download"):
        fmt = gr.Radio(
            list(FORMATS),
            value="wav",
            show_label=False,
            container=False,
            elem_id="track-format",
            min_width=180,
        )
        download = TakeDownload(
            "Download", size="sm", interactive=False, elem_id="result-download", min_width=140
        )
    with gr.Row(elem_classes=["ms-track-actions"], elem_id="track-keep"):
        favourite = gr.Button(
            "☆ Favourite", size="sm", interactive=False, elem_id="track-favourite"
        )
        reuse_settings = gr.Button(
            "Reuse settings", size="sm", interactive=False, elem_id="reuse-settings"
        )
        reuse_seed = gr.Button("Reuse seed", size="sm", interactive=False, elem_id="reuse-seed")
        delete = gr.Button("Delete", size="sm", interactive=False, elem_id="track-delete")
    return TrackActions(
        extend=extend,
        loop=loop,
        variations=variations,
        use_as_melody=use_as_melody,
        continue_this=continue_this,
        reuse_settings=reuse_settings,
        reuse_seed=reuse_seed,
        fmt=fmt,
        download=download,
        favourite=favourite,
        delete=delete,
    )


def build_undo_bar() -> UndoBar:
    with gr.Row(visible=False, elem_id="undo-bar", elem_classes=["ms-undo"]) as row:
        text = gr.HTML("", elem_id="undo-text")
        undo = gr.Button("Undo", size="sm", variant="primary", elem_id="undo-delete", scale=0)
    return UndoBar(
        row=row,
        text=text,
        undo=undo,
        pending=gr.State(None),
        timer=gr.Timer(UNDO_SECONDS, active=False),
    )


# -- handlers --------------------------------------------------------------------------------


@dataclass
class TrackParts:
    """The track's display components (the player and what surrounds it)."""

    audio: gr.Audio
    preview: gr.Audio
    marks: gr.HTML
    facts: gr.HTML
    takes: gr.HTML


class TrackHandlers:
    """Show the selected result and act on it; limited to the visitor's own entries."""

    def __init__(
        self,
        studio: Studio,
        parts: TrackParts,
        actions: TrackActions,
        undo_bar: UndoBar,
        selected: gr.State,
        deletes: PendingDeletes,
    ):
        self.studio = studio
        self.parts = parts
        self.actions = actions
        self.undo_bar = undo_bar
        self.selected = selected
        self.deletes = deletes
        self.cache = FormatCache(studio.library)

    def outputs(self) -> list[gr.components.Component]:
        p, a = self.parts, self.actions
        return [p.audio, p.preview, p.marks, p.facts, p.takes, a.download, *a.buttons()]

    def _record(self, snap: Any, owner_value: Any) -> RunRecord | None:
        run_id = snap.get("run_id") if isinstance(snap, dict) else None
        if not run_id or run_id in self.deletes.hidden():
            return None
        return self.studio.library.get(run_id, self.studio.owner(owner_value))

    def _empty(self) -> Updates:
        p, a = self.parts, self.actions
        return {
            p.audio: gr.update(value=None, visible=True),
            p.preview: gr.update(visible=False),
            p.marks: "",
            p.facts: EMPTY_FACTS,
            p.takes: "",
            a.download: gr.update(value=None, interactive=False, label="Download"),
            **{b: gr.update(interactive=False) for b in a.buttons()},
        }

    async def show(self, snap: Any, owner_value: Any, fmt: str | None) -> Updates:
        """The selected result: player, marks, facts, download file, actions' states."""
        record = self._record(snap, owner_value)
        if record is None:
            return self._empty()
        p, a = self.parts, self.actions
        audio = self.studio.files.servable(self.studio.library.audio_file(record))
        ok = record.status == "succeeded" and audio is not None
        is_take = record.kind in ("take", "variation", "part", "loop-source")
        out: Updates = {
            p.audio: gr.update(value=audio, visible=True, loop=record.kind == "loop"),
            p.preview: gr.update(visible=False),
            p.marks: marks_html(record),
            p.facts: track_facts_html(
                record, self.studio.settings.base_url, file_url(audio) if audio else ""
            ),
            p.takes: takes_html(self.studio, record, self.studio.owner(owner_value)),
            a.extend: gr.update(interactive=ok),
            a.loop: gr.update(interactive=True),
            a.variations: gr.update(interactive=True),
            a.use_as_melody: gr.update(interactive=ok),
            a.continue_this: gr.update(interactive=ok),
            a.reuse_settings: gr.update(interactive=True),
            a.reuse_seed: gr.update(interactive=record.seed is not None and is_take),
            # Only a result worth keeping can be a favourite.
            a.favourite: gr.update(
                interactive=ok, value="★ Favourite" if record.favourite else "☆ Favourite"
            ),
            a.delete: gr.update(interactive=not record.in_flight),
            **await self._download(record, fmt),
        }
        return out

    async def _download(self, record: RunRecord, fmt: str | None) -> Updates:
        """The download button holds the file in the chosen format: one click saves it."""
        button = self.actions.download
        if not record.has_audio or record.status != "succeeded":
            return {button: gr.update(value=None, interactive=False, label="Download")}
        fmt = fmt if fmt in FORMATS else "wav"
        folder = self.studio.files.staging_dir()
        try:
            path = await asyncio.to_thread(self.cache.deliver, record, fmt, folder)
        except StudioError:
            return {button: gr.update(value=None, interactive=False, label="Download")}
        return {button: gr.update(value=str(path), interactive=True, label=f"Download .{fmt}")}

    async def reformat(self, snap: Any, owner_value: Any, fmt: str | None) -> Updates:
        record = self._record(snap, owner_value)
        if record is None:
            return {}
        return await self._download(record, fmt)

    def favourite(self, snap: Any, owner_value: Any) -> Updates:
        record = self._record(snap, owner_value)
        if record is None or record.status != "succeeded":
            return {}
        kept = not record.favourite
        self.studio.library.set_favourite(record.id, self.studio.owner(owner_value), kept)
        return {self.actions.favourite: gr.update(value="★ Favourite" if kept else "☆ Favourite")}

    async def delete(self, run_id: Any, owner_value: Any) -> Updates:
        """Delete (after UNDO_SECONDS): hidden at once, the Undo bar shown."""
        if isinstance(run_id, dict):
            run_id = run_id.get("run_id")
        owner = self.studio.owner(owner_value)
        record = self.studio.library.get(str(run_id or ""), owner)
        bar = self.undo_bar
        if record is None or record.in_flight:
            return {}
        self.deletes.delete_later(record.id, owner)
        title = record.prompt or "(no prompt)"
        title = title if len(title) <= 60 else title[:59] + "…"
        return {
            bar.row: gr.update(visible=True),
            bar.text: f'<span class="ms-undo-text">Deleted “{esc(title)}”.</span>',
            bar.pending: {"run_id": record.id},
            bar.timer: gr.Timer(UNDO_SECONDS, active=True),
        }

    async def undo(self, pending: Any, owner_value: Any) -> Updates:
        run_id = pending.get("run_id") if isinstance(pending, dict) else None
        owner = self.studio.owner(owner_value)
        bar = self.undo_bar
        if run_id and self.deletes.undo(run_id, owner):
            return {
                bar.row: gr.update(visible=False),
                bar.pending: None,
                bar.timer: gr.Timer(active=False),
                self.selected: self.studio.run_snapshot(run_id, owner),
            }
        return {
            bar.row: gr.update(visible=True),
            bar.text: message_html("Too late: it is deleted.", kind="warning"),
            bar.pending: None,
            bar.timer: gr.Timer(active=False),
        }

    def gone(self) -> Updates:
        """The Undo time is over: the bar goes."""
        bar = self.undo_bar
        return {
            bar.row: gr.update(visible=False),
            bar.pending: None,
            bar.timer: gr.Timer(active=False),
        }

    def after_delete(self, snap: Any, pending: Any) -> Any:
        """The selection moves off a deleted result."""
        deleted = pending.get("run_id") if isinstance(pending, dict) else None
        if isinstance(snap, dict) and snap.get("run_id") == deleted:
            return None
        return gr.skip()

    def latest(self, owner_value: Any) -> dict[str, Any] | None:
        """The visitor's latest result with audio (what a reload shows)."""
        owner = self.studio.owner(owner_value)
        hidden = self.deletes.hidden()
        page = self.studio.library.list(owner, per_page=10, status="succeeded")
        for record in page.items:
            if record.has_audio and record.id not in hidden:
                return self.studio.snapshot(record)
        return None


def wire_track(
    handlers: TrackHandlers, owner: gr.components.Component, selection: Selection
) -> list[Any]:
    """Show the selection whenever it changes; favourite, delete, undo and the format.

    Returns the events after which the history should be listed again.
    """
    a, bar, selected = handlers.actions, handlers.undo_bar, handlers.selected
    selection.watch(handlers.show, [selected, owner, a.fmt], handlers.outputs())
    a.fmt.input(
        handlers.reformat,
        [selected, owner, a.fmt],
        [a.download],
        trigger_mode="always_last",
        **PRIVATE,
    )
    fav = a.favourite.click(handlers.favourite, [selected, owner], [a.favourite], **PRIVATE)
    deleted = wire_delete(handlers, a.delete, selected, owner)
    bar_parts = [bar.row, bar.text, bar.pending, bar.timer]
    undone = bar.undo.click(handlers.undo, [bar.pending, owner], [*bar_parts, selected], **PRIVATE)
    bar.timer.tick(handlers.gone, None, bar_parts, **PRIVATE)
    return [fav, deleted, undone]


def wire_delete(
    handlers: TrackHandlers,
    button: gr.Button,
    run: gr.components.Component,
    owner: gr.components.Component,
) -> Any:
    """A Delete button for the run `run` holds (a snapshot or an id): the Undo bar shows."""
    bar = handlers.undo_bar
    return button.click(
        handlers.delete, [run, owner], [bar.row, bar.text, bar.pending, bar.timer], **PRIVATE
    ).then(handlers.after_delete, [handlers.selected, bar.pending], [handlers.selected], **PRIVATE)
