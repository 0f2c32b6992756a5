"""The history gallery: the visitor's runs from the library, newest first, paged, playable."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from services.analysis.search import parse_history_query
from services.errors import StudioError
from services.library import RunRecord
from services.library.records import IN_FLIGHT_STATUSES as IN_FLIGHT
from ui.context import Studio
from ui.events import Updates
from ui.formatting import esc, history_summary_html, message_html
from ui.history_cards import CARD_ACTIONS_JS, EMPTY_HISTORY, cards_html
from ui.kinds import badge_text
from ui.reuse import Reuse
from ui.track import file_url, takes_html

PER_PAGE = 8
IN_FLIGHT_REFRESH_S = 3.0


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
    export_file: gr.File
    cards: gr.HTML  # the page's cards (`ui.history_cards`)
    state: gr.State  # the page shown: {"page", "pages", "total", "search", "cards"}
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
    export_file = gr.File(label="Export", visible=False, elem_id="export-file")
    with gr.Row(equal_height=True, elem_id="history-pager"):
        previous = gr.Button("← Newer", size="sm", elem_id="history-prev", min_width=100)
        summary = gr.HTML("", elem_id="history-summary")
        next_ = gr.Button("Older →", size="sm", elem_id="history-next", min_width=100)
    cards = gr.HTML(EMPTY_HISTORY, elem_id="history-box", js_on_load=CARD_ACTIONS_JS)
    return HistoryView(
        search=search,
        favourites_only=favourites_only,
        refresh=refresh,
        import_runs=import_runs,
        notice=notice,
        summary=summary,
        previous=previous,
        next=next_,
        export_file=export_file,
        cards=cards,
        state=gr.State(None),
        timer=gr.Timer(IN_FLIGHT_REFRESH_S, active=False),
        seen=gr.State(None),
    )


def _controls(state: dict[str, Any]) -> tuple[bool, bool, bool]:
    """Newer usable, Older usable, the timer ticking (a run on the page is in flight)."""
    in_flight = any(c["status"] in IN_FLIGHT for c in state["cards"])
    return state["page"] > 1, state["page"] < state["pages"], in_flight


def card(record: RunRecord, audio_file: Path | None, takes: str = "") -> dict[str, Any]:
    """What a history card shows (kept in the page's gr.State, server side)."""
    return {
        "audio_file": str(audio_file) if audio_file else None,
        "id": record.id,
        "kind": record.kind,
        "badge": badge_text(record),
        "takes": takes,
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
        "bpm": record.bpm,
        "key": record.key,
        # A loop's tempo as asked, shown beside the measured one.
        "asked_bpm": (record.compose or {}).get("bpm") if record.kind == "loop" else None,
    }


class HistoryHandlers:
    """Listing and card actions; every call is limited to the visitor's own runs."""

    def __init__(
        self,
        studio: Studio,
        view: HistoryView,
        reuse: Reuse,
        hidden: Callable[[], frozenset[str]] = frozenset,
    ):
        self.studio = studio
        self.view = view
        self.reuse = reuse
        self.hidden = hidden  # entries deleted a moment ago (their Undo still possible)

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
        hidden = self.hidden()
        shown = [r for r in result.items if r.id not in hidden]
        return {
            "page": result.page,
            "pages": result.pages,
            "total": result.total - (len(result.items) - len(shown)),
            "search": (search or "").strip(),
            "cards": [self._card(r, owner) for r in shown],
        }

    def _card(self, record: RunRecord, owner: str | None) -> dict[str, Any]:
        audio = self.studio.library.audio_file(record)
        item = card(record, audio, takes_html(self.studio, record, owner))
        served = self.studio.files.servable(audio)
        item["audio_url"] = file_url(served) if served else ""
        return item

    def listing_outputs(self) -> list[gr.components.Component]:
        v = self.view
        return [v.state, v.cards, v.summary, v.previous, v.next, v.timer]

    def show(
        self,
        owner_value: Any,
        search: str | None,
        favourites_only: bool,
        page: int = 1,
        before: dict[str, Any] | None = None,
    ) -> tuple[Any, ...]:
        """The listing's outputs for `page`; `before` is the page's listing until now, whose
        pager and timer states are not sent again (each is a component rebuilt)."""
        state = self.page(owner_value, search, favourites_only, page)
        now, then = _controls(state), _controls(before) if before else None
        updates = (
            gr.update(interactive=now[0]),
            gr.update(interactive=now[1]),
            gr.update(active=now[2]),
        )
        newer, older, ticking = (
            gr.skip() if then and then[i] == now[i] else update for i, update in enumerate(updates)
        )
        return (
            state,
            cards_html(state["cards"], self.studio.files.servable),
            history_summary_html(state["total"], state["page"], state["pages"], state["search"]),
            newer,
            older,
            ticking,
        )

    def first(self, owner_value: Any, search: str | None, fav: bool) -> tuple[Any, ...]:
        return self.show(owner_value, search, fav, 1)

    def same(
        self, owner_value: Any, search: str | None, fav: bool, state: dict[str, Any] | None
    ) -> tuple[Any, ...]:
        return self.show(owner_value, search, fav, (state or {}).get("page", 1), state)

    def tick(
        self,
        owner_value: Any,
        search: str | None,
        fav: bool,
        state: dict[str, Any] | None,
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
        self, owner_value: Any, search: str | None, fav: bool, state: dict[str, Any] | None
    ) -> tuple[Any, ...]:
        return self.show(owner_value, search, fav, (state or {}).get("page", 1) - 1, state)

    def older(
        self, owner_value: Any, search: str | None, fav: bool, state: dict[str, Any] | None
    ) -> tuple[Any, ...]:
        return self.show(owner_value, search, fav, (state or {}).get("page", 1) + 1, state)

    # -- card actions --------------------------------------------------------------------------

    def _snap(self, run_id: str, owner_value: Any) -> dict[str, Any] | None:
        return self.studio.run_snapshot(run_id, self.studio.owner(owner_value))

    def reuse_settings(self, run_id: str, owner_value: Any) -> Updates:
        return self.reuse.settings(self._snap(run_id, owner_value))

    def use_as_melody(self, run_id: str, owner_value: Any, model_version: str) -> Updates:
        return self.reuse.as_melody(self._snap(run_id, owner_value), model_version)

    def continue_run(self, run_id: str, owner_value: Any) -> Updates:
        return self.reuse.continue_from(self._snap(run_id, owner_value))

    def open(self, run_id: str, owner_value: Any) -> dict[str, Any] | None:
        """The card's result becomes the selected one (the track shows it)."""
        return self._snap(run_id, owner_value)

    def toggle_favourite(self, run_id: str, owner_value: Any) -> None:
        """A finished result becomes a favourite, or stops being one."""
        owner = self.studio.owner(owner_value)
        record = self.studio.library.get(run_id, owner)
        if record is not None and record.status == "succeeded":
            self.studio.library.set_favourite(run_id, owner, not record.favourite)

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
