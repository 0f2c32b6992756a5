"""The history's cards as one HTML block, and their actions as one event.

A card is plain HTML (its badge, its player, its buttons); a click on a card's button sends
`{"action", "run"}` from the browser, and `CardActions.act` does it. Rendering the cards as
Gradio components instead (`gr.render`) rebuilt some hundred components and their event
listeners on the server at every listing, after every take: most of a page take's extra CPU
on a small checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from services.library.records import IN_FLIGHT_STATUSES as IN_FLIGHT
from ui.events import PRIVATE, Updates
from ui.formatting import card_html, esc
from ui.track import TrackHandlers, native_player_html

if TYPE_CHECKING:
    from ui.history import HistoryHandlers

EMPTY_HISTORY = (
    '<div class="ms-empty" id="history-empty">No runs here yet. Your results will appear here, '
    "newest first, and stay after a reload or a restart.</div>"
)

# Clicks reach the server only from a card's own buttons; Open and "Stems & MIDI…" bring the
# panel they fill into view at once.
CARD_ACTIONS_JS = """
element.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-action]');
  if (!button || button.disabled || !element.contains(button)) return;
  const action = button.dataset.action;
  const panel = {open: 'track-col', tracks: 'track-tools'}[action];
  const el = panel && document.getElementById(panel);
  if (el) setTimeout(() => el.scrollIntoView({behavior: 'smooth', block: 'start'}), 50);
  trigger('click', {action: action, run: button.dataset.run});
});
"""

ACTIONS = ("open", "favourite", "reuse", "tracks", "export", "delete")


def _button(label: str, action: str, run_id: str, *, enabled: bool = True) -> str:
    off = "" if enabled else " disabled"
    return (
        f'<button type="button" class="ms-btn card-{action}" data-action="{action}" '
        f'data-run="{esc(run_id)}"{off}>{esc(label)}</button>'
    )


def card_block(item: Mapping[str, Any], player: str) -> str:
    """One card: its text, its player (or a group's takes), at most three actions in view
    (Open, Favourite, More) and the rest under More."""
    run_id = str(item["id"])
    done = item["status"] == "succeeded"
    kind = esc(item.get("kind") or "take")
    shown = [_button("Open", "open", run_id)]
    if done:
        shown.append(
            _button("★ Favourite" if item.get("favourite") else "☆ Favourite", "favourite", run_id)
        )
    more = [_button("Reuse settings", "reuse", run_id)]
    if done:
        more.append(_button("Stems & MIDI…", "tracks", run_id))
    more.append(_button("Export", "export", run_id))
    # A run still in flight can't be deleted: its audio is about to be filed.
    more.append(_button("Delete", "delete", run_id, enabled=item["status"] not in IN_FLIGHT))
    return (
        f'<div class="ms-card ms-card-{kind}" id="card-{esc(run_id)}">'
        f'<div class="ms-card-head">{card_html(item)}</div>{player}'
        f'<div class="ms-card-actions">{"".join(shown)}</div>'
        f'<details class="ms-card-more"><summary>More</summary>'
        f'<div class="ms-card-actions">{"".join(more)}</div></details></div>'
    )


def cards_html(cards: Iterable[Mapping[str, Any]], servable: Callable[[Any], str | None]) -> str:
    """A page of cards; `servable` gives a card's audio file as the page may fetch it."""
    blocks = []
    for item in cards:
        audio = servable(item.get("audio_file"))
        if item.get("takes"):
            player = f'<div class="ms-card-takes">{item["takes"]}</div>'
        elif audio:
            player = native_player_html(audio, loop=item.get("kind") == "loop", css="ms-card-audio")
        else:
            player = ""
        blocks.append(card_block(item, player))
    if not blocks:
        return EMPTY_HISTORY
    return f'<div class="ms-grid" id="history-cards">{"".join(blocks)}</div>'


@dataclass(frozen=True)
class CardTargets:
    """What the cards' actions change besides the listing."""

    selected: gr.State  # the track's selection
    track_tools: gr.Accordion | None  # the stems and MIDI panel ("Stems & MIDI…")


class CardActions:
    """Every card button's action; each is limited to the visitor's own runs."""

    def __init__(self, history: HistoryHandlers, track: TrackHandlers, targets: CardTargets):
        self.history = history
        self.track = track
        self.targets = targets

    def outputs(self) -> list[Any]:
        """Every block an action may change, each once."""
        h, bar = self.history, self.track.undo_bar
        blocks: list[Any] = [self.targets.selected, *h.listing_outputs()]
        blocks += [*h.reuse.outputs(), h.view.export_file, h.view.notice]
        blocks += [bar.row, bar.text, bar.pending, bar.timer]
        if self.targets.track_tools is not None:
            blocks.append(self.targets.track_tools)
        return list(dict.fromkeys(blocks))

    async def act(
        self,
        owner_value: Any,
        search: str | None,
        favourites_only: bool,
        state: dict[str, Any] | None,
        selected: Any,
        event: gr.EventData,
    ) -> Updates:
        """The card button's action (`event` carries the action and the run's id)."""
        # The browser's payload; Gradio's attribute access fails on a click that sent none.
        data = event._data if isinstance(event._data, dict) else {}
        action, run_id = str(data.get("action") or ""), str(data.get("run") or "")
        if action not in ACTIONS or not run_id:
            return {}
        h = self.history
        listing = (owner_value, search, favourites_only, state)
        if action == "open":
            return {self.targets.selected: h.open(run_id, owner_value)}
        if action == "tracks":
            opened: Updates = {self.targets.selected: h.open(run_id, owner_value)}
            if self.targets.track_tools is not None:
                opened[self.targets.track_tools] = gr.update(open=True)
            return opened
        if action == "reuse":
            return h.reuse_settings(run_id, owner_value)
        if action == "export":
            file, notice = h.export(run_id, owner_value)
            return {h.view.export_file: file, h.view.notice: notice}
        if action == "favourite":
            h.toggle_favourite(run_id, owner_value)
            return self._listed(listing)
        return await self._delete(run_id, listing, selected)

    async def _delete(self, run_id: str, listing: tuple[Any, ...], selected: Any) -> Updates:
        """Delete after the Undo time: the Undo bar shows, the selection moves off it, and the
        card leaves the listing at once."""
        bar = await self.track.delete(run_id, listing[0])
        if not bar:
            return {}
        moved = self.track.after_delete(selected, {"run_id": run_id})
        return {**bar, self.targets.selected: moved, **self._listed(listing)}

    def _listed(self, listing: tuple[Any, ...]) -> Updates:
        outputs: Sequence[Any] = self.history.listing_outputs()
        return dict(zip(outputs, self.history.same(*listing), strict=True))


def wire_cards(actions: CardActions, cards: gr.HTML, owner: Any, listing: Sequence[Any]) -> None:
    """A click on a card's button runs its action (`listing`: search, favourites, page state)."""
    cards.click(
        actions.act,
        [owner, *listing, actions.targets.selected],
        actions.outputs(),
        trigger_mode="multiple",
        **PRIVATE,
    )
