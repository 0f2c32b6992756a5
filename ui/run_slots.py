"""How many runs the app makes at once: one Gradio concurrency group for the events that run the
model (the page's Generate, `/generate`, Variations, Extend, Arrange), sized by the engines
offered. The Loop panel keeps a group of its own (ui.compose_loop), `/loop` Gradio's default,
and Split / Transcribe theirs (ui.track_tools: they do not run MusicGen).
"""

from __future__ import annotations

from typing import Any

from services.engines.protocol import LOCAL
from services.settings import Settings

RUNS = "generation"  # the concurrency id every run event shares
# A Replicate run mostly waits on HTTP: one asyncio task, its polls drawn from the token's shared
# read budget (services/replicate/budget.py); 100 at once cost 1.26x one run's wall in one process
# (bench.concurrency). What one visitor may hold is the spending caps' business, not this.
REPLICATE_RUNS_AT_ONCE = 128
# This machine only: one model pass at a time, and the runs wait in the engine's fair queue
# (turns by visitor, a few waiting each). The slots only have to let them reach it, or Gradio's
# first-come order in front of it would decide the turns instead.
LOCAL_RUNS_AT_ONCE = 32
# Gradio's own number of queue workers (40), kept for every event outside the run slots.
OTHER_EVENTS = 40


def runs_at_once(settings: Settings) -> int:
    """Run events handled at once: many where Replicate runs are possible, fewer when only
    this machine runs."""
    return LOCAL_RUNS_AT_ONCE if settings.engine == LOCAL else REPLICATE_RUNS_AT_ONCE


def run_slots(settings: Settings) -> dict[str, Any]:
    """The concurrency keywords of an event that runs the model."""
    return {"concurrency_id": RUNS, "concurrency_limit": runs_at_once(settings)}


def queue_workers(settings: Settings) -> int:
    """Gradio's queue workers (launch's `max_threads`): the run slots and the other events'."""
    return runs_at_once(settings) + OTHER_EVENTS
