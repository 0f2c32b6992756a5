"""One way to stream a run on the page: prepare -> stream updates -> finish.

Generate, Make loop, Make variations and Extend all go through `stream`: it refuses a bad
request before anything is sent, sends the start and cancel buttons' states with the first and
last updates and every BUTTONS_REFRESH_S between (a property update rebuilds a component),
lets a cancel reach the service even when Gradio closes the generator between two updates, and
turns a failure into the panel's message. `wire_stream` connects the buttons the same way for
every panel (one click starts, one click stops, the history refreshes after both).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import gradio as gr
from gradio.blocks import Block

from services.errors import RequestInvalid, StudioError
from ui.events import PRIVATE, Updates

# Between the start and the end of a run, the start and stop buttons' state is sent again at
# most this often: each time costs the server a component rebuilt with its whole config
# (Gradio's handling of a property update), and progress comes up to 4 times a second.
BUTTONS_REFRESH_S = 5.0


class Finishing(Protocol):
    """An update of a run or a composition: it says when it is the last one."""

    @property
    def finished(self) -> bool: ...


P = TypeVar("P")
U = TypeVar("U", bound=Finishing)


async def cancel_inner(updates: AsyncIterator[Any]) -> None:
    """Make the service see a cancellation even when Gradio closes us between two updates.

    Gradio's Cancel either cancels the task awaiting the next update (the service then sees
    CancelledError) or closes this generator while it is suspended at a yield. In the second
    case the CancelledError is thrown into the service's generator here, so it still cancels
    the prediction on Replicate and records the run as canceled.
    """
    athrow = getattr(updates, "athrow", None)
    if athrow is None:
        return
    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, RuntimeError):
        await athrow(asyncio.CancelledError())


async def aclose(updates: AsyncIterator[Any]) -> None:
    """Close a run's update stream (an async generator) and whatever it holds open."""
    close = getattr(updates, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


@dataclass(frozen=True)
class RunButtons:
    """A panel's start and stop buttons."""

    start: gr.Button
    cancel: gr.Button

    def state(self, *, running: bool) -> Updates:
        return {
            self.start: gr.update(interactive=not running),
            self.cancel: gr.update(interactive=running),
        }


@dataclass(frozen=True)
class Stream(Generic[P, U]):
    """How one panel shows a run; every callable returns the panel's changes."""

    buttons: RunButtons
    # The request checked (nothing sent yet); RequestInvalid refuses it.
    prepare: Callable[[], Awaitable[P]]
    # The run itself, started from the prepared request.
    start: Callable[[P], AsyncIterator[U]]
    # What the panel shows once the request is accepted, before the first update.
    begin: Callable[[P], Updates]
    # One update, with the seconds since the click (the page's own clock); None: nothing
    # worth a round to the page (only progress moved, and the page saw it a moment ago).
    show: Callable[[U, float], Updates | None]
    # The end: the last update (None when the run said nothing) and the seconds since the click.
    finish: Callable[[U | None, float], Awaitable[Updates]]
    refused: Callable[[RequestInvalid], Updates]
    # A failure; the last update before it (None: nothing was sent).
    failed: Callable[[StudioError, U | None], Updates]
    # The start's changes go with the run's first update, in one round: for a run whose first
    # update comes at once (the local engine files it before any work).
    begin_with_first: bool = False


class LastUpdates(dict[Block, Any]):
    """A stream's last changes: nothing of this run follows them (see `then_show`)."""


async def stream(how: Stream[P, U]) -> AsyncIterator[Updates]:
    """Run `how` end to end, yielding the page's changes (a Gradio generator handler)."""
    clock = buttons_sent = time.monotonic()
    idle = how.buttons.state(running=False)
    try:
        prepared = await how.prepare()
    except RequestInvalid as err:
        yield LastUpdates({**how.refused(err), **idle})
        return
    started: Updates = {**how.begin(prepared), **how.buttons.state(running=True)}
    if not how.begin_with_first:
        yield started
        started = {}
    updates = how.start(prepared)
    last: U | None = None
    ending: Updates = started  # what the run's last update shows, sent with the end
    try:
        async for update in updates:
            last = update
            changes = how.show(update, time.monotonic() - clock)
            if update.finished:
                ending = {**started, **(changes or {})}
                break
            if changes is None and not started:
                continue
            changes, started = {**started, **(changes or {})}, {}
            # The buttons' state goes again every BUTTONS_REFRESH_S: a page that merged or
            # missed the first one still lets the musician cancel.
            now = time.monotonic()
            if now - buttons_sent >= BUTTONS_REFRESH_S:
                changes = {**changes, **how.buttons.state(running=True)}
                buttons_sent = now
            yield changes
    except GeneratorExit:
        await cancel_inner(updates)
        raise
    except RequestInvalid as err:
        yield LastUpdates({**started, **how.refused(err), **idle})
        return
    except StudioError as err:
        yield LastUpdates({**started, **how.failed(err, last), **idle})
        return
    finally:
        await aclose(updates)
    # One round for the end: each update the page gets costs the server a Gradio round.
    yield LastUpdates({**ending, **await how.finish(last, time.monotonic() - clock), **idle})


@dataclass(frozen=True)
class Afterwards:
    """What a stream shows once its run ended: `fn(*inputs)` gives a value per output."""

    fn: Callable[..., Sequence[Any]]
    inputs: Sequence[Block]
    outputs: Sequence[Block]


def then_show(
    handler: Callable[..., AsyncIterator[Updates]], taken: int, afterwards: Afterwards
) -> Callable[..., AsyncIterator[Updates]]:
    """`handler` (its `taken` first inputs), its last update (a `LastUpdates`) carrying what
    `afterwards` shows (from the rest of the inputs).

    The same round carries it: a `.then` event instead would cost the server a queue round of
    its own after every run.
    """

    async def run(*values: Any) -> AsyncIterator[Updates]:
        async for changes in handler(*values[:taken]):
            if isinstance(changes, LastUpdates):  # the end: `afterwards` rides along
                shown = await asyncio.to_thread(afterwards.fn, *values[taken:])
                listed = dict(zip(afterwards.outputs, shown, strict=True))
                changes = LastUpdates({**changes, **listed})
            yield changes

    return run


def wire_stream(
    buttons: RunButtons,
    handler: Callable[..., AsyncIterator[Updates]],
    inputs: Sequence[Block],
    outputs: Sequence[Block],
    *,
    concurrency_id: str,
    concurrency_limit: int,
    stop: tuple[Callable[..., Any], Sequence[Block]] | None = None,
    after_stop: tuple[Callable[..., Any], Sequence[Block]] | None = None,
    also_cancels: Sequence[Any] = (),
    afterwards: Afterwards | None = None,
) -> tuple[Any, Any]:
    """Start on the start button, stop on the cancel button; returns (start, stop) events.

    `stop` is an instant handler (no queue) that tells the service at once; Gradio then
    cancels the start event (a click still waiting in the queue never runs); `after_stop` waits
    for the run to be filed and says how it ended. Both write into `outputs`. `afterwards`
    (e.g. the history listed again) follows a run that ended by itself, in the same stream.
    """
    if afterwards is not None:
        handler = then_show(handler, len(inputs), afterwards)
        inputs = [*inputs, *afterwards.inputs]
        outputs = [*outputs, *afterwards.outputs]
    started = buttons.start.click(
        handler,
        list(inputs),
        list(outputs),
        concurrency_limit=concurrency_limit,
        concurrency_id=concurrency_id,
        trigger_mode="once",
        **PRIVATE,
    )
    fn, stop_inputs = stop if stop is not None else (None, ())
    stopped = buttons.cancel.click(
        fn,
        list(stop_inputs),
        list(outputs) if fn is not None else None,
        cancels=[started, *also_cancels],
        queue=False,
        **PRIVATE,
    )
    if after_stop is not None:
        after_fn, after_inputs = after_stop
        stopped = stopped.then(after_fn, list(after_inputs), list(outputs), **PRIVATE)
    return started, stopped
