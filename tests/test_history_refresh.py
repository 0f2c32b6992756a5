"""The history's timer re-lists the page only when the library changed, and re-renders it only
when its cards did; a new run still appears on the next tick."""

from __future__ import annotations

from typing import Any

import gradio as gr

from services.generation import GenerationService
from services.library import Library
from services.settings import Settings
from ui.context import Studio
from ui.files import FileServer
from ui.history import HistoryHandlers, build_history_view

REQUEST = {"prompt": "history tick test", "duration": 2}


class CountingLibrary(Library):
    """Counts the listing work a tick may do: queries of runs and looks at their files."""

    calls = 0

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # The front's calls are attributes bound to its parts: count through them.
        self.list = counted(self.list)
        self.audio_file = counted(self.audio_file)


def counted(call: Any) -> Any:
    def counting(*args: Any, **kwargs: Any) -> Any:
        CountingLibrary.calls += 1
        return call(*args, **kwargs)

    return counting


def handlers_for(tmp_path) -> tuple[HistoryHandlers, CountingLibrary]:
    settings = Settings.from_env({"MUSICGEN_DATA_DIR": str(tmp_path)})
    library = CountingLibrary(tmp_path)
    service = GenerationService(settings, library)
    studio = Studio(settings=settings, service=service, library=library, files=FileServer())
    with gr.Blocks():
        view = build_history_view(can_import=False)
    return HistoryHandlers(studio, view, reuse=None), library  # type: ignore[arg-type]


def skipped(outputs: tuple[Any, ...]) -> bool:
    return all(out == gr.skip() for out in outputs)


def test_ticks_without_a_change_do_no_work_and_a_new_run_appears(tmp_path):
    handlers, library = handlers_for(tmp_path)
    width = len(handlers.listing_outputs())
    first = library.create_pending(None, REQUEST)  # in flight: the page's timer runs
    state = handlers.first(None, "", False)[0]
    assert [c["id"] for c in state["cards"]] == [first.id]

    # The first tick lists once and finds the page as shown: nothing is re-rendered.
    out = handlers.tick(None, "", False, state, None)
    assert len(out) == width + 1 and skipped(out[:width])
    seen = out[-1]
    assert isinstance(seen, int)

    CountingLibrary.calls = 0
    for _ in range(5):
        out = handlers.tick(None, "", False, state, seen)
        assert skipped(out)
    assert CountingLibrary.calls == 0  # no listing, no file looked at

    second = library.create_pending(None, REQUEST)
    out = handlers.tick(None, "", False, state, seen)
    new_state, new_seen = out[0], out[-1]
    assert [c["id"] for c in new_state["cards"]] == [second.id, first.id]
    assert new_seen != seen

    # A write from elsewhere (another process's library object) is seen too.
    Library(tmp_path).update(first.id, status="processing")
    out = handlers.tick(None, "", False, new_state, new_seen)
    assert out[0]["cards"][1]["status"] == "processing"
