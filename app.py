"""MusicGen Studio: the composition root. Reads settings, builds services and the page, launches.

`python app.py` honours Gradio's own GRADIO_SERVER_NAME / GRADIO_SERVER_PORT.
"""

from __future__ import annotations

from services.threads import one_blas_thread

# Before anything imports numpy (which loads OpenBLAS and its spinning helper thread).
one_blas_thread()

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import gradio as gr

import ui
from services.compose.extend import Extender
from services.compose.loop import LoopMaker
from services.compose.variations import Variations
from services.engines.registry import local_engine
from services.generation import GenerationService
from services.library import Library
from services.settings import Settings

log = logging.getLogger("musicgen_studio")

QUEUE_CONCURRENCY = 8  # page events (listing, form updates) at once; runs have their own limit
GRADIO_SUMMARY_EVERY = "GRADIO_ANALYTICS_CACHE_FREQUENCY"  # events between two summaries
NEVER = 10**12


def startup(
    service: GenerationService, library: Library, settings: Settings
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A server lifespan: pick up runs left in flight, in the background, while the page serves.

    Long pieces that were being extended become resumable (their parts so far are kept); groups
    of variations are settled once their takes have been resumed.
    """

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        async def resume() -> None:
            try:
                Extender(service, library, settings.data_dir).mark_interrupted()
                settled = await service.resume_in_flight()
                Variations(service, library).settle_all()
                # Loops whose take was filed (now or before the stop) are cut; CPU work.
                await asyncio.to_thread(LoopMaker(service, library).settle_left_over)
            except Exception:  # a failed resume must never stop the app
                log.exception("Could not resume the runs left in flight")
                return
            if settled:
                log.info("Resumed %d run(s) left in flight by an earlier start", len(settled))

        # The local default checkpoint loads now, so that the first click sounds at once.
        service.engines.warm_up()
        task = asyncio.create_task(resume())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            service.close()  # tempo and key measurements not yet made
            await asyncio.to_thread(service.engines.shutdown)
            await service.engines.aclose()

    return lifespan


def build_app(settings: Settings) -> tuple[gr.Blocks, GenerationService, Library]:
    """Settings -> library -> engines -> generation service -> the page (queued, not launched)."""
    library = Library(settings.data_dir, max_mb=settings.max_library_mb)
    service = GenerationService(settings, library, local=local_engine(settings), measure_takes=True)
    demo = ui.build(settings, service, library)
    # Gradio's queue sums up every event it has run (a pandas table of up to 10,000 of them,
    # 10-18 ms of CPU) after each event, for a monitoring page this app does not open: with a
    # crowd that was about a seventh of the app's CPU. Read as the queue is made; an operator's
    # own setting stands.
    os.environ.setdefault(GRADIO_SUMMARY_EVERY, str(NEVER))
    # Bounded: past it a click is refused at once ("busy, try again in a minute", ui.busy)
    # rather than left waiting behind a crowd.
    demo.queue(default_concurrency_limit=QUEUE_CONCURRENCY, max_size=settings.queue_max_size)
    return demo, service, library


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # One line per HTTP request (every poll) would drown what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = Settings.from_env()
    demo, service, library = build_app(settings)
    lifespan = startup(service, library, settings)
    # Gradio's FastAPI app takes our routes before its own: Replicate's webhooks land there.
    routes = ui.webhook_routes(service.engines.webhooks)
    app_kwargs = {"lifespan": lifespan, "routes": routes, "middleware": ui.server_middleware()}
    demo.launch(**ui.launch_options(settings), app_kwargs=app_kwargs)


if __name__ == "__main__":
    main()
