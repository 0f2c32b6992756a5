"""A history card's buttons are plain HTML whose clicks name an action and a run: the action is
done only on the visitor's own run, whatever id a crafted click sends, and each card offers
what its run allows."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import gradio as gr
import pytest

from services.generation import GenerationService
from services.library import Library
from services.settings import Settings
from tests.support.audio_files import make_tone
from ui.context import Studio
from ui.files import FileServer
from ui.history import HistoryHandlers, build_history_view
from ui.history_cards import CardActions, CardTargets, cards_html
from ui.run_panel import build_run_view
from ui.track import PendingDeletes, TrackHandlers, build_undo_bar

ALICE, BOB = uuid.uuid4().hex, uuid.uuid4().hex


@pytest.fixture
def studio(tmp_path: Path) -> Studio:
    settings = Settings.from_env({"MUSICGEN_DATA_DIR": str(tmp_path), "MUSICGEN_SHARED": "1"})
    library = Library(tmp_path)
    service = GenerationService(settings, library)
    return Studio(settings=settings, service=service, library=library, files=FileServer())


def actions_for(studio: Studio) -> CardActions:
    with gr.Blocks():
        view = build_history_view(can_import=False)
        run_view = build_run_view()
        bar = build_undo_bar()
    deletes = PendingDeletes(studio)  # as the page has it: one for the history and the track
    history = HistoryHandlers(studio, view, reuse=None, hidden=deletes.hidden)  # type: ignore[arg-type]
    track = TrackHandlers(studio, run_view.track, run_view.actions, bar, run_view.last_run, deletes)
    return CardActions(history, track, CardTargets(run_view.last_run, track_tools=None))


def take(studio: Studio, owner: str, prompt: str, tmp_path: Path, **fields: Any) -> str:
    audio = make_tone(tmp_path / f"{uuid.uuid4().hex}.wav", seconds=1.0)
    record = studio.library.add_run(
        owner, {"prompt": prompt}, status="succeeded", audio_src=audio, audio_format="wav",
        audio_seconds=1.0, **fields,
    )  # fmt: skip
    return record.id


async def click(actions: CardActions, owner: str, action: str, run_id: str) -> dict[Any, Any]:
    state = actions.history.page(owner, "", False)
    return await actions.act(
        owner, "", False, state, None, gr.EventData(None, {"action": action, "run": run_id})
    )


async def test_a_click_acts_on_the_visitors_own_run_and_never_on_anothers(studio, tmp_path):
    actions = actions_for(studio)
    mine = take(studio, ALICE, "Alice's cello", tmp_path)
    theirs = take(studio, BOB, "Bob's banjo", tmp_path)

    shown = await click(actions, ALICE, "favourite", mine)
    assert studio.library.get(mine, ALICE).favourite
    state = shown[actions.history.view.state]
    assert [c["favourite"] for c in state["cards"]] == [True]  # the listing came with it
    assert "★ Favourite" in shown[actions.history.view.cards]

    # A crafted click with Bob's run id, sent from Alice's page: nothing of Bob's changes.
    for action in ("favourite", "delete", "export", "open"):
        changes = await click(actions, ALICE, action, theirs)
        assert not any(isinstance(v, dict) and v.get("run_id") == theirs for v in changes.values())
    bobs = studio.library.get(theirs, BOB)
    assert bobs is not None and not bobs.favourite
    assert theirs not in actions.track.deletes.hidden()
    assert await click(actions, ALICE, "no-such-action", mine) == {}


async def test_delete_from_a_card_hides_it_at_once_with_undo_and_deselects_it(studio, tmp_path):
    actions = actions_for(studio)
    keep = take(studio, ALICE, "Keep me", tmp_path)
    gone = take(studio, ALICE, "Delete me", tmp_path)
    selected = studio.run_snapshot(gone, ALICE)
    state = actions.history.page(ALICE, "", False)

    changes = await actions.act(
        ALICE, "", False, state, selected, gr.EventData(None, {"action": "delete", "run": gone})
    )
    bar = actions.track.undo_bar
    assert changes[bar.row]["visible"] is True and "Delete me" in changes[bar.text]
    assert changes[actions.targets.selected] is None  # the track moved off it
    assert [c["id"] for c in changes[actions.history.view.state]["cards"]] == [keep]
    assert f'id="card-{gone}"' not in changes[actions.history.view.cards]
    assert studio.library.get(gone, ALICE) is not None  # until the Undo time is over
    actions.track.deletes.undo(gone, ALICE)


def test_each_card_offers_what_its_run_allows(studio, tmp_path):
    done = take(studio, ALICE, "Done <b>take</b>", tmp_path)
    running = studio.library.add_run(ALICE, {"prompt": "Still making"}, status="processing").id
    cards = HistoryHandlers(studio, None, None).page(ALICE, "", False)["cards"]  # type: ignore[arg-type]
    html = cards_html(cards, studio.files.servable)

    def card_part(run_id: str) -> str:
        start = html.index(f'id="card-{run_id}"')
        end = html.find('<div class="ms-card ', start + 1)
        return html[start : end if end > 0 else len(html)]

    finished, in_flight = card_part(done), card_part(running)
    assert "Done &lt;b&gt;take&lt;/b&gt;" in finished  # a prompt is text, never markup
    assert 'data-action="favourite"' in finished and 'data-action="tracks"' in finished
    assert "<audio" in finished
    # A run in flight can be opened, not kept, split or deleted: its audio is on its way.
    assert 'data-action="favourite"' not in in_flight and 'data-action="tracks"' not in in_flight
    assert 'data-action="delete" data-run="' + running + '" disabled' in in_flight
    assert "No runs here yet" in cards_html([], studio.files.servable)
