"""The history gallery: the visitor's runs from the library, newest first, paged, playable."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

import gradio as gr

from services.analysis.search import parse_history_query
from services.errors import StudioError
from services.library import RunRecord
from services.library.records import IN_FLIGHT_STATUSES as IN_FLIGHT
from ui.context import Studio
from ui.formatting import card_html, esc, history_summary_html, message_html
from ui.inputs import WAVEFORM
from ui.reuse import Reuse

PER_PAGE = 8
IN_FLIGHT_REFRESH_S = 3.0
PRIVATE: Mapping[str, Any] = MappingProxyType(
    {"api_visibility": "private", "show_progress": "hidden"}
)


@dataclass
class HistoryView:
    search: gr.Textbox
    favourites_only: gr.Checkbox
    refresh: gr.Button
    import_runs: gr.Button
    notice: gr.HTML
    summary: gr.HTML
    previous: gr.Button
    next: gr.Button
    confirm_row: gr.Row
    confirm_text: gr.HTML
    confirm_delete: gr.Button
    keep: gr.Button
    export_file: gr.File
    state: gr.State  # the page shown: {"page", "pages", "total", "search", "cards"}
    pending_delete: gr.State
    timer: gr.Timer  # ticks only while a run on the page is in flight (e.g. being resumed)
    seen: gr.State  # the library's revision when a tick last listed the page


IMPORT_OFF = (
    "Importing earlier runs is off here: this shared deployment runs on the server's own "
    "Replicate account, whose runs are not yours."
)


def import_allowed(studio: Studio) -> bool:
    """Import brings in the token's account: only a visitor's own, or a local install's."""
    return not (studio.settings.shared and studio.service.server_token_set)


def build_history_view(*, can_import: bool) -> HistoryView:
    with gr.Row():
        search = gr.Textbox(
            label="Search your prompts, keys and tempos",
            placeholder="e.g. piano, A minor, 90-110 bpm",
            elem_id="history-search",
            scale=3,
            min_width=200,
        )
        favourites_only = gr.Checkbox(
            label="Favourites only", elem_id="history-favourites", scale=1, min_width=140
        )
        refresh = gr.Button("Refresh", size="sm", elem_id="history-refresh", scale=0)
        import_runs = gr.Button(
            "Import my earlier Replicate runs",
            size="sm",
            elem_id="history-import",
            scale=1,
            interactive=can_import,
        )
    if not can_import:
        gr.HTML(f'<div class="ms-clip-info">{esc(IMPORT_OFF)}</div>', elem_id="import-off")
    notice = gr.HTML("", elem_id="history-notice")
    with gr.Row(visible=False, elem_id="confirm-delete-row") as confirm_row:
        confirm_text = gr.HTML("", elem_id="confirm-delete-text")
        confirm_delete = gr.Button(
            "Delete for good", variant="stop", size="sm", elem_id="confirm-delete"
        )
        keep = gr.Button("Keep it", size="sm", elem_id="keep-run")
    export_file = gr.File(label="Export", visible=False, elem_id="export-file")
    with gr.Row(equal_height=True, elem_id="history-pager"):
        previous = gr.Button("← Newer", size="sm", elem_id="history-prev", min_width=100)
        summary = gr.HTML("", elem_id="history-summary")
        next_ = gr.Button("Older →", size="sm", elem_id="history-next", min_width=100)
    return HistoryView(
        search=search,
        favourites_only=favourites_only,
        refresh=refresh,
        import_runs=import_runs,
        notice=notice,
        summary=summary,
        previous=previous,
        next=next_,
        confirm_row=confirm_row,
        confirm_text=confirm_text,
        confirm_delete=confirm_delete,
        keep=keep,
        export_file=export_file,
        state=gr.State(None),
        pending_delete=gr.State(None),
        timer=gr.Timer(IN_FLIGHT_REFRESH_S, active=False),
        seen=gr.State(None),
    )


def card(record: RunRecord, audio_file: Path | None) -> dict[str, Any]:
    """What a history card shows (kept in the page's gr.State, server side)."""
    return {
        "audio_file": str(audio_file) if audio_file else None,
        "id": record.id,
        "prompt": record.prompt,
        "model_version": record.model_version,
        "duration": record.duration,
        "audio_seconds": record.audio_seconds,
        "audio_format": record.audio_format,
        "created_at": record.created_at,
        "status": record.status,
        "error": record.error,
        "seed": record.seed,
        "favourite": record.favourite,
        "data_removed": record.data_removed,
        "has_audio": record.has_audio,
        "kind": record.kind,
        "bpm": record.bpm,
        "key": record.key,
        # A loop's tempo as asked, shown beside the measured one.
        "asked_bpm": (record.compose or {}).get("bpm") if record.kind == "loop" else None,
    }


class HistoryHandlers:
    """Listing and card actions; every call is limited to the visitor's own runs."""

    def __init__(self, studio: Studio, view: HistoryView, reuse: Reuse):
        self.studio = studio
        self.view = view
        self.reuse = reuse

    # -- listing -----------------------------------------------------------------------------

    def page(
        self, owner_value: Any, search: str | None, favourites_only: bool, page: int = 1
    ) -> dict[str, Any]:
        owner = self.studio.owner(owner_value)
        query = parse_history_query(search)
        result = self.studio.library.list(
            owner,
            page=page,
            per_page=PER_PAGE,
            search=query.text or None,
            favourite=True if favourites_only else None,
            key=query.key,
            bpm_range=(query.bpm_min, query.bpm_max),
        )
        return {
            "page": result.page,
            "pages": result.pages,
            "total": result.total,
            "search": (search or "").strip(),
            "cards": [card(r, self.studio.library.audio_file(r)) for r in result.items],
        }

    def listing_outputs(self) -> list[gr.components.Component]:
        v = self.view
        return [v.state, v.summary, v.previous, v.next, v.timer]

    def show(
        self, owner_value: Any, search: str | None, favourites_only: bool, page: int = 1
    ) -> tuple[Any, ...]:
        state = self.page(owner_value, search, favourites_only, page)
        return (
            state,
            history_summary_html(state["total"], state["page"], state["pages"], state["search"]),
            gr.update(interactive=state["page"] > 1),
            gr.update(interactive=state["page"] < state["pages"]),
            gr.update(active=any(c["status"] in IN_FLIGHT for c in state["cards"])),
        )

    def first(self, owner_value: Any, search: str | None, fav: bool) -> tuple[Any, ...]:
        return self.show(owner_value, search, fav, 1)

    def same(
        self, owner_value: Any, search: str | None, fav: bool, state: dict | None
    ) -> tuple[Any, ...]:
        return self.show(owner_value, search, fav, (state or {}).get("page", 1))

    def tick(
        self,
        owner_value: Any,
        search: str | None,
        fav: bool,
        state: dict | None,
        seen: int | None,
    ) -> tuple[Any, ...]:
        """The timer: nothing at all unless the library changed since this visitor's last tick,
        and the page only if its cards did (outputs: `listing_outputs()` and `view.seen`)."""
        unchanged = (gr.skip(),) * len(self.listing_outputs())
        revision = self.studio.library.revision()
        if revision == seen:
            return (*unchanged, gr.skip())
        shown = self.same(owner_value, search, fav, state)
        if state is not None and shown[0] == state:  # someone else's runs changed
            return (*unchanged, revision)
        return (*shown, revision)

    def newer(
        self, owner_value: Any, search: str | None, fav: bool, state: dict | None
    ) -> tuple[Any, ...]:
        return self.show(owner_value, search, fav, (state or {}).get("page", 1) - 1)

    def older(
        self, owner_value: Any, search: str | None, fav: bool, state: dict | None
    ) -> tuple[Any, ...]:
        return self.show(owner_value, search, fav, (state or {}).get("page", 1) + 1)

    # -- card actions --------------------------------------------------------------------------

    def _snap(self, run_id: str, owner_value: Any) -> dict[str, Any] | None:
        return self.studio.run_snapshot(run_id, self.studio.owner(owner_value))

    def reuse_settings(self, run_id: str, owner_value: Any) -> dict:
        return self.reuse.settings(self._snap(run_id, owner_value))

    def use_as_melody(self, run_id: str, owner_value: Any, model_version: str) -> dict:
        return self.reuse.as_melody(self._snap(run_id, owner_value), model_version)

    def continue_run(self, run_id: str, owner_value: Any) -> dict:
        return self.reuse.continue_from(self._snap(run_id, owner_value))

    def open_for_extend(self, run_id: str, owner_value: Any) -> tuple[Any, Any]:
        """The run becomes the result shown (what Extend extends, what the stems and MIDI
        panel works on), and the panel opens."""
        return self._snap(run_id, owner_value), gr.update(open=True)

    def set_favourite(self, run_id: str, value: bool, owner_value: Any) -> None:
        self.studio.library.set_favourite(run_id, self.studio.owner(owner_value), value)

    def export(self, run_id: str, owner_value: Any) -> tuple[Any, str]:
        owner = self.studio.owner(owner_value)
        if self.studio.library.get(run_id, owner) is None:
            return gr.update(visible=False), message_html("That run is not in your library.")
        path = self.studio.library.export(run_id, owner, self.studio.files.staging_dir())
        return (
            gr.update(value=str(path), visible=True, label=f"Export of {path.name}"),
            message_html(
                f"Exported {path.name}: the audio with a JSON file of its settings.", kind="info"
            ),
        )

    def ask_delete(self, run_id: str, owner_value: Any) -> tuple[Any, ...]:
        record = self.studio.library.get(run_id, self.studio.owner(owner_value))
        if record is None:
            return None, gr.update(visible=False), ""
        what = record.prompt or "(no prompt)"
        short = what if len(what) <= 80 else what[:77] + "…"
        text = (
            f'<div class="ms-box ms-warning">Delete “{esc(short)}” and its audio from your '
            "library? This cannot be undone.</div>"
        )
        return run_id, gr.update(visible=True), text

    def confirm_delete(self, run_id: str | None, owner_value: Any) -> tuple[Any, ...]:
        removed = bool(run_id) and self.studio.library.delete(
            run_id, self.studio.owner(owner_value)
        )
        note = message_html("Deleted.", kind="info") if removed else ""
        return None, gr.update(visible=False), note

    def keep(self) -> tuple[Any, ...]:
        return None, gr.update(visible=False)

    async def import_runs(self, owner_value: Any, token_value: Any) -> str:
        if not import_allowed(self.studio):
            return message_html(IMPORT_OFF, kind="warning")
        try:
            report = await self.studio.service.import_account(
                token=self.studio.token(token_value), owner=self.studio.owner(owner_value)
            )
        except StudioError as err:
            return message_html(str(err))
        return message_html(report.message, kind="info")


def render_cards(
    handlers: HistoryHandlers,
    state: dict | None,
    *,
    owner: gr.components.Component,
    model_version: gr.components.Component,
    search: gr.components.Component,
    favourites_only: gr.components.Component,
    extend_target: tuple[gr.State, gr.Accordion] | None = None,
    track_target: tuple[gr.State, gr.Accordion] | None = None,
) -> None:
    """The cards of one page, each with its player and actions (called inside @gr.render).

    `extend_target` is the state the Extend panel reads and the panel itself: a card's
    Extend button hands its run to them; `track_target` likewise for the stems and MIDI panel.
    """
    view, studio = handlers.view, handlers.studio
    cards = (state or {}).get("cards") or []
    if not cards:
        gr.HTML(
            '<div class="ms-empty">No runs here yet. Your results will appear here, newest '
            "first, and stay after a reload or a restart.</div>",
            elem_id="history-empty",
        )
        return
    refresh = handlers.same
    listing_inputs = [owner, search, favourites_only, view.state]
    with gr.Row(elem_classes=["ms-grid"], elem_id="history-cards"):
        for item in cards:
            run_id = item["id"]
            with gr.Column(
                elem_classes=["ms-card"], elem_id=f"card-{run_id}", min_width=260, scale=1
            ):
                gr.HTML(card_html(item), elem_classes=["ms-card-head"])
                audio = studio.files.servable(item.get("audio_file"))
                if audio:
                    gr.Audio(
                        value=audio,
                        type="filepath",
                        interactive=False,
                        show_label=False,
                        waveform_options=WAVEFORM,
                        buttons=["download"],
                        elem_classes=["ms-card-audio"],
                    )
                with gr.Row(elem_classes=["ms-card-actions"]):
                    reuse_btn = gr.Button("Reuse settings", size="sm", elem_classes=["card-reuse"])
                    reuse_btn.click(
                        partial(handlers.reuse_settings, run_id),
                        [owner],
                        handlers.reuse.outputs(),
                        **PRIVATE,
                    )
                    if audio:
                        melody_btn = gr.Button(
                            "Use as melody", size="sm", elem_classes=["card-melody"]
                        )
                        melody_btn.click(
                            partial(handlers.use_as_melody, run_id),
                            [owner, model_version],
                            handlers.reuse.outputs(),
                            **PRIVATE,
                        )
                        continue_btn = gr.Button(
                            "Continue", size="sm", elem_classes=["card-continue"]
                        )
                        continue_btn.click(
                            partial(handlers.continue_run, run_id),
                            [owner],
                            handlers.reuse.outputs(),
                            **PRIVATE,
                        )
                        if extend_target is not None:
                            extend_btn = gr.Button(
                                "Extend…", size="sm", elem_classes=["card-extend"]
                            )
                            extend_btn.click(
                                partial(handlers.open_for_extend, run_id),
                                [owner],
                                list(extend_target),
                                **PRIVATE,
                            )
                        if track_target is not None:
                            track_btn = gr.Button(
                                "Stems & MIDI…", size="sm", elem_classes=["card-tracks"]
                            )
                            track_btn.click(
                                partial(handlers.open_for_extend, run_id),
                                [owner],
                                list(track_target),
                                **PRIVATE,
                            )
                        gr.DownloadButton(
                            "Download", value=audio, size="sm", elem_classes=["card-download"]
                        )
                    export_btn = gr.Button("Export", size="sm", elem_classes=["card-export"])
                    export_btn.click(
                        partial(handlers.export, run_id),
                        [owner],
                        [view.export_file, view.notice],
                        **PRIVATE,
                    )
                    fav = bool(item["favourite"])
                    fav_btn = gr.Button(
                        "★ Unfavourite" if fav else "☆ Favourite",
                        size="sm",
                        elem_classes=["card-favourite"],
                    )
                    fav_btn.click(
                        partial(handlers.set_favourite, run_id, not fav),
                        [owner],
                        None,
                        **PRIVATE,
                    ).then(refresh, listing_inputs, handlers.listing_outputs(), **PRIVATE)
                    # A run still in flight can't be deleted: its audio is about to be filed.
                    delete_btn = gr.Button(
                        "Delete",
                        size="sm",
                        variant="stop",
                        elem_classes=["card-delete"],
                        interactive=item["status"] not in IN_FLIGHT,
                    )
                    delete_btn.click(
                        partial(handlers.ask_delete, run_id),
                        [owner],
                        [view.pending_delete, view.confirm_row, view.confirm_text],
                        **PRIVATE,
                    )
