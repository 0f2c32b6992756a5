"""Cancel is a signal the run's follower waits on, and the run's end an awaitable.

The follower polls rarely here (30 s apart): a cancel must still end the run at once, with
one cancel request and no poll, and whoever pressed Cancel learns the outcome without reading
the library.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import gradio as gr

from services.events import RunUpdate
from services.generation import GenerationService
from services.library import Library
from services.musicgen import GenerationRequest
from services.settings import Settings
from tests.client_support import FAST_FOLLOW, make_client
from tests.emulator import Emulator
from tests.support.services import make_service
from ui.context import Studio
from ui.files import FileServer
from ui.run_panel import build_controls, build_run_view
from ui.runs import RunHandlers

SLOW_POLLS = replace(
    FAST_FOLLOW,
    first_poll=30.0,
    progress_interval=30.0,
    idle_interval=30.0,
    starting_max=30.0,
    loading_max=30.0,
)
PROMPT = GenerationRequest(prompt="long drone for cancel", duration=8)
BOUND_S = 1.0  # a cancel ends the run within this, far below the next poll


class CountingLibrary(Library):
    """A library that counts its reads (every public method call that reaches SQLite)."""

    reads = 0
    counting = False

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        get = self.get  # the front's own (an attribute bound to its part)

        def counted(*args: Any, **kwargs: Any) -> Any:
            if self.counting:
                CountingLibrary.reads += 1
            return get(*args, **kwargs)

        self.get = counted


def slow_service(emulator: Emulator, data_dir: Path, library: Library | None = None):
    return make_service(
        emulator,
        data_dir,
        library=library,
        client_factory=lambda token: make_client(emulator, token=token, follow_policy=SLOW_POLLS),
    )


async def start_run(
    service: GenerationService, owner: str | None = None
) -> tuple[asyncio.Task[None], list[RunUpdate]]:
    """A run consumed in the background, returned once it is on Replicate and being followed."""
    seen: list[RunUpdate] = []

    async def consume() -> None:
        async for update in service.generate(PROMPT, token="test-token", owner=owner):
            seen.append(update)

    task = asyncio.create_task(consume())
    while not any(u.prediction_id for u in seen):
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # the follower is now asleep until its next poll, 30 s away
    return task, seen


def requests_after(emulator: Emulator, start: float) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in emulator.requests if r.time >= start]


async def test_a_cancel_wakes_the_follower_at_once_with_one_cancel_and_no_poll(emulator, tmp_path):
    emulator.configure(stream=False, run_seconds=20.0)
    service = slow_service(emulator, tmp_path)
    task, seen = await start_run(service)
    run_id, prediction_id = seen[-1].run_id, seen[-1].prediction_id
    assert run_id and prediction_id

    asked = time.time()
    assert service.cancel(run_id, None)
    await asyncio.wait_for(task, BOUND_S)  # the consumer sees the end, not a CancelledError
    took = time.time() - asked

    assert seen[-1].status == "canceled" and seen[-1].run_id == run_id
    assert took < BOUND_S
    assert requests_after(emulator, asked) == [("POST", f"/v1/predictions/{prediction_id}/cancel")]
    assert emulator.status(prediction_id) == "canceled"
    assert Library(tmp_path).get(run_id).status == "canceled"
    end = await service.wait_end(run_id, None)
    assert end is not None and (end.status, end.prediction_id) == ("canceled", prediction_id)


async def test_one_visitor_cannot_cancel_anothers_run(emulator, tmp_path):
    emulator.configure(stream=False, run_seconds=20.0)
    service = slow_service(emulator, tmp_path)
    task, seen = await start_run(service, owner="alice")
    run_id = seen[-1].run_id
    assert not service.cancel(run_id, "mallory")
    assert await service.wait_end(run_id, "mallory") is None
    assert not task.done()
    assert service.cancel(run_id, "alice")
    await asyncio.wait_for(task, BOUND_S)
    assert seen[-1].status == "canceled"


async def test_the_cancel_handler_learns_the_end_without_reading_the_library(emulator, tmp_path):
    emulator.configure(stream=False, run_seconds=20.0)
    library = CountingLibrary(tmp_path)
    service = slow_service(emulator, tmp_path, library)
    settings = Settings.from_env({"MUSICGEN_DATA_DIR": str(tmp_path)})
    studio = Studio(settings=settings, service=service, library=library, files=FileServer())
    with gr.Blocks():
        controls, view = build_controls(), build_run_view()
    handlers = RunHandlers(studio, controls, view)
    task, seen = await start_run(service)
    run_id, prediction_id = seen[-1].run_id, seen[-1].prediction_id

    CountingLibrary.reads, library.counting = 0, True
    started = time.monotonic()
    await handlers.cancel_pressed(run_id, None)  # as the Cancel click does, then its .then
    shown = await asyncio.wait_for(handlers.after_cancel(run_id, None), BOUND_S)
    library.counting = False

    assert time.monotonic() - started < BOUND_S
    assert CountingLibrary.reads == 0
    assert "Canceled" in shown[view.status] and prediction_id in shown[view.status]
    assert shown[view.current_run] is None
    await asyncio.wait_for(task, BOUND_S)
    assert library.get(run_id).status == "canceled"


async def test_a_cancel_that_comes_after_success_files_the_audio(emulator, tmp_path):
    # The run ends while the follower sleeps: the cancel finds it succeeded and files its audio.
    emulator.configure(stream=False, run_seconds=1.0, max_wait_seconds=0.05)
    service = slow_service(emulator, tmp_path)
    task, seen = await start_run(service)
    run_id, prediction_id = seen[-1].run_id, seen[-1].prediction_id
    await asyncio.to_thread(emulator.wait_for, prediction_id, "succeeded", 10)

    assert service.cancel(run_id, None)
    await asyncio.wait_for(task, 10)

    assert seen[-1].status == "succeeded" and seen[-1].audio_path
    record = Library(tmp_path).get(run_id)
    assert record.status == "succeeded" and record.has_audio
    end = await service.wait_end(run_id, None)
    assert end is not None and end.status == "succeeded"
