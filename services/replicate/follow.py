"""Following one run to its end: the SSE stream when offered, else polling aimed by progress.

Every change (status, new log lines) becomes a RunUpdate; the last update is terminal. The
follower knows no model: the caller may hand it readers of the model's log lines (`progress`:
a "done / total" reading; `seed`), and polls are then aimed at the run's end (see schedule).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from services.errors import ConnectionFailed, StudioError
from services.events import TERMINAL_STATUSES, Progress, RunUpdate, split_log_lines
from services.replicate.budget import STEADY, URGENT, Lane
from services.replicate.predictions import Prediction
from services.replicate.retry import TRANSIENT_ERRORS
from services.replicate.schedule import FollowPolicy, PollSchedule
from services.replicate.stream import ServerSentEvent, StreamUnavailable

__all__ = [
    "FollowPolicy",
    "Nudges",
    "PollSchedule",
    "ProgressReader",
    "RunSource",
    "RunTracker",
    "SeedReader",
    "final_error",
    "follow_run",
]

log = logging.getLogger(__name__)

# Errors a poll may hit while the run goes on; the client already retried each one under the
# retry policy, and the follower keeps polling (FollowPolicy.poll_failures) while the run lasts.
_TRANSIENT = TRANSIENT_ERRORS


# Readers of one log line: a progress reading ("done / total") or the seed the model used.
ProgressReader = Callable[[str], Progress | None]
SeedReader = Callable[[str], int | None]


def _no_reading(line: str) -> None:
    return None


class RunSource(Protocol):
    """What the follower needs from a client."""

    async def get(
        self, prediction_id: str, *, lane: Lane = STEADY, due: float | None = None
    ) -> Prediction: ...

    async def cancel(self, prediction_id: str) -> Prediction: ...

    def stream_events(
        self, url: str, *, last_event_id: str | None = None
    ) -> AsyncGenerator[ServerSentEvent, None]: ...


def final_error(prediction: Mapping[str, Any]) -> str | None:
    """The message a finished run ends with: the API's own for failures, None on success."""
    status = prediction.get("status")
    error = prediction.get("error")
    message = error if isinstance(error, str) else (str(error) if error else "")
    if status == "failed":
        return message or "The run failed without a message from the API."
    if status == "canceled":
        return message or "The run was canceled."
    if status == "aborted":
        return message or "The run was aborted: it did not start before its deadline."
    if status == "succeeded":
        if prediction.get("data_removed"):
            return (
                "The run's output has expired: Replicate deletes outputs of API runs after "
                "about an hour."
            )
        if not prediction.get("output"):
            return "The run finished but returned no output."
    return None


def _settled(text: str, progress: ProgressReader) -> str:
    """The logs without an unfinished last line, unless that line is a whole progress reading.

    A model may print progress as "\\r  NN / TOTAL" with no line end until the next one, so
    the newest reading is then always the unterminated tail.
    """
    cut = max(text.rfind("\n"), text.rfind("\r"))
    tail = text[cut + 1 :]
    return text if not tail or progress(tail) is not None else text[: cut + 1]


class RunTracker:
    """Turns successive observations of one run into RunUpdates carrying only what is new."""

    def __init__(
        self,
        prediction: Prediction,
        started: float,
        *,
        progress: ProgressReader | None = None,
        seed: SeedReader | None = None,
    ):
        self.prediction_id: str = prediction["id"]
        self.started = started
        self.prediction = prediction
        self.read_progress: ProgressReader = progress or _no_reading
        self.read_seed: SeedReader = seed or _no_reading
        self.status: str | None = None
        self.lines: list[str] = []
        self.progress: Progress | None = None
        self.progress_step: int | None = None  # tokens between the last two readings, once seen
        self.seed: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def observe(self, prediction: Prediction, *, hint: str | None = None) -> RunUpdate | None:
        """A fetched prediction; `hint` is an error message to fall back on (from the stream)."""
        self.prediction = prediction
        status = str(prediction.get("status") or "starting")
        terminal = status in TERMINAL_STATUSES
        text = prediction.get("logs") or ""
        new = self._new_lines(text if terminal else _settled(text, self.read_progress))
        error = final_error(prediction) if terminal else None
        if terminal and hint and status != "succeeded" and not prediction.get("error"):
            error = hint
        return self._change(status, new, error)

    def observe_lines(self, lines: list[str], position: int) -> RunUpdate | None:
        """Log lines from the stream, the first at line `position` of the run's log.

        A stream opened afresh replays the log from its start, so lines already shown (from
        the create answer's logs) are skipped rather than repeated. The run is processing
        once it logs.
        """
        fresh = [
            line
            for i, line in enumerate(lines, start=position)
            if i >= len(self.lines) or self.lines[i] != line
        ]
        status = "processing" if lines or self.status != "starting" else "starting"
        return self._change(status, fresh, None)

    def timed_out(self, timeout: float) -> RunUpdate:
        span = f"{timeout / 60:g} minutes" if timeout >= 60 else f"{timeout:g} seconds"
        message = f"The run timed out: it did not finish within {span}, so it was stopped."
        update = self._change("failed", [], message)
        assert update is not None  # the run was not finished, so the status changes
        return update

    def _new_lines(self, text: str) -> list[str]:
        # Logs only grow, so the lines past those already shown are the new ones. The last
        # shown line may since have grown (a reading caught mid-write); any other difference
        # means the logs were rewritten, and nothing is repeated.
        full = split_log_lines(text)
        known = len(self.lines)
        settled = max(0, known - 1)
        if len(full) <= known or full[:settled] != self.lines[:settled]:
            return []
        return full[known:]

    def _change(self, status: str, new: list[str], error: str | None) -> RunUpdate | None:
        if status == self.status and not new:
            return None
        self.status = status
        if new:
            self.lines.extend(new)
            for line in new:
                reading = self.read_progress(line)
                if reading is None:
                    continue
                if self.progress is not None and reading.done > self.progress.done:
                    self.progress_step = reading.done - self.progress.done
                self.progress = reading
            for line in new:
                if self.seed is not None:
                    break
                self.seed = self.read_seed(line)
        return RunUpdate(
            status=status,
            prediction_id=self.prediction_id,
            new_logs=tuple(new),
            progress=self.progress,
            seed=self.seed,
            elapsed=time.monotonic() - self.started,
            error=error,
            prediction=self.prediction,
        )


class Nudges:
    """News of one run that reaches its follower between polls, so it need not wait for the
    next one: a prediction pushed by a webhook."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Prediction] = asyncio.Queue()

    def push(self, prediction: Prediction) -> None:
        """The run as someone else just saw it: the follower takes it as a poll's answer."""
        self._queue.put_nowait(prediction)

    async def until(self, at: float) -> Prediction | None:
        """The next pushed prediction, or None when none came by monotonic time `at`."""
        try:
            async with asyncio.timeout_at(_loop_time(at)):
                return await self._queue.get()
        except TimeoutError:
            return None


def _loop_time(monotonic_at: float) -> float:
    """A time.monotonic() instant on the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_at - time.monotonic())


async def follow_run(
    source: RunSource,
    prediction: Prediction,
    *,
    started: float,
    policy: FollowPolicy,
    nudges: Nudges | None = None,
    progress: ProgressReader | None = None,
    seed: SeedReader | None = None,
) -> AsyncIterator[RunUpdate]:
    """Yield an update for every change of the run until it ends; the last one is terminal.

    `nudges` lets a webhook hand the follower news between its polls. `progress`
    and `seed` read the model's log lines (none: the run shows no progress and no seed, and
    polls are not aimed at its end).
    """
    tracker = RunTracker(prediction, started, progress=progress, seed=seed)
    deadline = started + policy.timeout
    first = tracker.observe(prediction)
    if first is not None:
        yield first
    if tracker.finished:
        return
    hint: str | None = None
    first_delay = policy.first_poll
    stream_url = (prediction.get("urls") or {}).get("stream")
    if isinstance(stream_url, str) and stream_url:
        outcome = _StreamOutcome()
        async for update in _follow_stream(source, tracker, stream_url, deadline, policy, outcome):
            yield update
        if tracker.finished:
            return
        hint = outcome.error
        if outcome.ended:
            first_delay = 0.0  # the stream said it is over: fetch the final prediction now
    async for update in _poll(
        source, tracker, deadline, policy, first_delay, hint, nudges or Nudges()
    ):
        yield update


@dataclass
class _StreamOutcome:
    ended: bool = False  # a done or error event arrived
    error: str | None = None  # the error event's message


def _stream_error_message(event: ServerSentEvent) -> str:
    try:
        data = json.loads(event.data)
    except ValueError:
        return event.data.strip() or "The run failed."
    if isinstance(data, dict):
        for key in ("detail", "error", "message"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return value
    return event.data.strip() or "The run failed."


async def _follow_stream(
    source: RunSource,
    tracker: RunTracker,
    url: str,
    deadline: float,
    policy: FollowPolicy,
    outcome: _StreamOutcome,
) -> AsyncIterator[RunUpdate]:
    """Updates from the SSE stream until it ends; returns early to let polling take over."""
    last_id: str | None = None
    fruitless = 0  # connections in a row that brought no event
    position = 0  # the log line the next streamed line stands at
    while fruitless < policy.stream_attempts:
        if last_id is None:
            position = 0  # without Last-Event-ID the stream starts over
        events = source.stream_events(url, last_event_id=last_id)
        got_event = False
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    # Bounded per event, never across a yield: a silent stream meets the deadline.
                    async with asyncio.timeout(remaining):
                        event = await anext(events)
                except (StopAsyncIteration, TimeoutError):
                    break
                got_event = True
                if event.id:
                    last_id = event.id
                if event.event == "logs":
                    lines = split_log_lines(event.data)
                    update = tracker.observe_lines(lines, position)
                    position += len(lines)
                    if update is not None:
                        yield update
                elif event.event == "done":
                    outcome.ended = True
                    return
                elif event.event == "error":
                    outcome.ended, outcome.error = True, _stream_error_message(event)
                    return
                # "output" events are not needed: the final GET carries the output.
        except StreamUnavailable as exc:
            log.info("run %s: no event stream (%s); polling instead", tracker.prediction_id, exc)
            return
        except ConnectionFailed as exc:
            log.info("run %s: event stream broke (%s)", tracker.prediction_id, exc)
        finally:
            await events.aclose()
        fruitless = 0 if got_event else fruitless + 1
        if deadline - time.monotonic() <= 0:
            return
        # The stream ended without saying so: the run may be over already. (A running run's
        # lines are left to the reopened stream, which resumes after the last event.)
        with contextlib.suppress(*_TRANSIENT):
            prediction = await source.get(tracker.prediction_id)
            if prediction.get("status") in TERMINAL_STATUSES:
                update = tracker.observe(prediction)
                if update is not None:
                    yield update
                return
        await asyncio.sleep(policy.stream_backoff * (fruitless + 1))


async def _poll(
    source: RunSource,
    tracker: RunTracker,
    deadline: float,
    policy: FollowPolicy,
    first_delay: float,
    hint: str | None,
    nudges: Nudges,
) -> AsyncIterator[RunUpdate]:
    schedule = PollSchedule(policy, started=tracker.started)
    # The run as first seen (the create's answer) is a look too: made after `started`.
    next_at = schedule.next_poll(
        tracker.started, time.monotonic(), tracker.status, tracker.progress, tracker.progress_step
    )
    if tracker.progress is None or first_delay <= 0:
        next_at = time.monotonic() + first_delay
    failures = 0
    lane = policy.budget_lane
    while True:
        if next_at >= deadline:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            async for update in _time_out(source, tracker, policy):
                yield update
            return
        news = await nudges.until(next_at)
        sent: float | None = time.monotonic()
        try:
            if news is not None:
                prediction, sent = news, None  # pushed: when it was seen is not known
            else:
                # Shared with every run under this token (services.replicate.budget): when it is
                # tight this poll waits its turn, polls aimed at an end first.
                prediction = await source.get(tracker.prediction_id, lane=lane, due=next_at)
        except _TRANSIENT as exc:
            failures += 1
            if failures >= policy.poll_failures:
                raise
            log.warning("run %s: poll failed (%s); trying again", tracker.prediction_id, exc)
            next_at = time.monotonic() + policy.starting_max
            continue
        failures = 0
        change = tracker.observe(prediction, hint=hint)
        if change is not None:
            yield change
        if tracker.finished:
            return
        next_at = schedule.next_poll(
            sent, time.monotonic(), tracker.status, tracker.progress, tracker.progress_step
        )
        aimed = schedule.near_end and policy.aim
        lane = URGENT if aimed else policy.budget_lane


async def _time_out(
    source: RunSource, tracker: RunTracker, policy: FollowPolicy
) -> AsyncIterator[RunUpdate]:
    """A last look at the run, then stop it and report the timeout."""
    update = None
    with contextlib.suppress(StudioError):
        update = tracker.observe(await source.get(tracker.prediction_id))
    if update is not None:
        yield update
    if tracker.finished:
        return
    with contextlib.suppress(StudioError):
        await source.cancel(tracker.prediction_id)
    yield tracker.timed_out(policy.timeout)
