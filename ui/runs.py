"""Generate and Cancel for one visitor: validation first, then the live run, then the result."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import gradio as gr

from services.engines.protocol import LOCAL
from services.errors import RequestInvalid, StudioError
from services.events import Progress, RunUpdate
from services.generation import GenerationService
from services.library import Library
from services.run_signals import RunEnd
from ui.context import Studio
from ui.engine_picker import model_for
from ui.form_rules import form_values, request_values
from ui.formatting import (
    errors_html,
    facts_html,
    message_html,
    progress_html,
    status_html,
    warnings_html,
)
from ui.run_panel import Controls, RunView

LOG_LINES_SHOWN = 400
SETTLE_TIMEOUT_S = 15.0
# Progress-only changes reach the page at most this often: the local engine reports every
# decoding step (50 a second of audio), and each update the page gets costs the server a
# Gradio round (postprocess, diff, send) that on a fast device cost more than the take.
PAGE_REFRESH_S = 0.25

Updates = dict[gr.components.Component, Any]


async def cancel_inner(updates: AsyncIterator[RunUpdate]) -> None:
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


def _progress(progress: Progress | None, *, complete: bool = False) -> str:
    if progress is None:
        return progress_html(None, None)
    done = progress.total if complete else progress.done
    return progress_html(done, progress.total)


def cancel_now(
    studio: Studio, run_id: str | None, owner_value: Any, status: Any, button: Any
) -> Updates:
    """Cancel the run now and give instant feedback; Gradio then also cancels the event
    (which stops a click still waiting in the queue, before its run exists)."""
    if run_id:
        studio.service.cancel(run_id, studio.owner(owner_value))
    return {status: status_html("canceling"), button: gr.update(interactive=False)}


async def ended_status(studio: Studio, run_id: str | None, owner_value: Any) -> str:
    """After a cancel: the run's status line once it is filed (see `settled`)."""
    end = await settled(studio.service, studio.library, run_id, studio.owner(owner_value))
    if end is None:
        return status_html("canceled", error="Canceled by you.")
    link = end.prediction_id if end.engine != LOCAL else None
    return status_html(end.status, prediction_id=link, error=end.error)


async def settled(
    service: GenerationService, library: Library, run_id: str | None, owner: str | None
) -> RunEnd | None:
    """How the run ended once it is filed (after a cancel), awaited from its follower.

    Only a run this process does not follow (it ended long ago, or never ran here) is looked
    up in the library, once; one still unfiled after SETTLE_TIMEOUT_S is reported canceled.
    """
    if not run_id:
        return None
    try:
        async with asyncio.timeout(SETTLE_TIMEOUT_S):
            end = await service.wait_end(run_id, owner)
    except TimeoutError:
        return RunEnd(run_id, "canceled", "Canceled by you.")
    if end is not None:
        return end
    record = library.get(run_id, owner)
    if record is None:
        return None
    return RunEnd(
        record.id,
        record.status if record.finished else "canceled",
        record.error,
        record.prediction_id,
        record.engine,
    )


class RunHandlers:
    """The Generate and Cancel events; one instance serves every visitor."""

    def __init__(self, studio: Studio, controls: Controls, view: RunView):
        self.studio = studio
        self.controls = controls
        self.view = view
        # Visitors whose left-over runs are being resumed right now (one resume at a time).
        self._resuming: set[str] = set()

    def outputs(self) -> list[gr.components.Component]:
        c, v = self.controls, self.view
        return [
            c.errors,
            c.generate,
            c.cancel,
            v.status,
            v.progress,
            v.preview,
            v.logs,
            v.result_audio,
            v.download,
            v.facts,
            v.use_as_melody,
            v.continue_this,
            v.reuse_settings,
            v.reuse_seed,
            v.current_run,
            v.last_run,
        ]

    def _buttons(self, *, running: bool) -> Updates:
        return {
            self.controls.generate: gr.update(interactive=not running),
            self.controls.cancel: gr.update(interactive=running),
        }

    def _actions(self, enabled: bool) -> Updates:
        v = self.view
        buttons = (v.use_as_melody, v.continue_this, v.reuse_settings, v.reuse_seed)
        return {b: gr.update(interactive=enabled) for b in buttons}

    async def generate(
        self,
        owner_value: Any,
        token_value: Any,
        parent_run: str | None,
        engine: str | None,
        local_model: str | None,
        *form: Any,
    ) -> AsyncIterator[Updates]:
        """Validate (nothing is sent if refused), then run and show every change."""
        c, v = self.controls, self.view
        visitor = self.studio.visitor(owner_value)
        owner = visitor.owner
        token = self.studio.token(token_value)
        values = request_values(form_values(form))
        model_for(engine, local_model, values)
        try:
            prepared = await asyncio.to_thread(self.studio.service.prepare, values, engine)
        except RequestInvalid as err:
            yield {c.errors: errors_html(err.errors), v.status: status_html("idle")}
            return
        yield {
            c.errors: warnings_html(list(prepared.notes)),
            v.status: status_html("validating"),
            v.progress: progress_html(None, None),
            v.preview: gr.update(value=None, visible=False),
            v.logs: "",
            **self._buttons(running=True),
        }
        logs: list[str] = []
        progress: Progress | None = None
        last: RunUpdate | None = None
        shown: tuple[Any, ...] = ()  # what the page was last sent, beyond progress
        shown_logs = 0
        sent_at = 0.0
        link = engine != LOCAL  # a Replicate prediction has a page on replicate.com
        updates = self.studio.service.generate(
            prepared,
            token=token,
            owner=owner,
            engine=engine,
            parent_run_id=parent_run or None,
            payer=visitor.payer,
        )
        try:
            async for update in updates:
                last = update
                logs.extend(update.new_logs)
                progress = update.progress or progress
                news = (update.status, update.queue_position, update.error, update.run_id)
                now = time.monotonic()
                if (
                    news == shown
                    and not update.preview_path
                    and not update.finished
                    and now - sent_at < PAGE_REFRESH_S
                ):
                    continue  # only progress moved, and the page saw it a moment ago
                shown, sent_at = news, now
                changes: Updates = {
                    v.status: status_html(
                        update.status,
                        elapsed=update.elapsed,
                        prediction_id=update.prediction_id if link else None,
                        error=update.error,
                        queue_position=update.queue_position,
                    ),
                    v.progress: _progress(progress),
                    v.current_run: update.run_id,
                    # Every update carries the buttons' state: a page that merged or missed
                    # the first one still lets the musician cancel; the last one (a cancel may
                    # end the handler right after it) frees Generate.
                    **self._buttons(running=not update.finished),
                }
                if len(logs) != shown_logs:
                    changes[v.logs] = "\n".join(logs[-LOG_LINES_SHOWN:])
                    shown_logs = len(logs)
                if update.preview_path:
                    changes[v.preview] = gr.update(value=update.preview_path, visible=True)
                yield changes
        except GeneratorExit:
            await cancel_inner(updates)
            raise
        except RequestInvalid as err:
            yield {c.errors: errors_html(err.errors), **self._buttons(running=False)}
            return
        except StudioError as err:
            # Before the first update nothing was sent (e.g. no token): not a failed run.
            started = last is not None
            yield {
                c.errors: message_html(str(err)),
                v.status: status_html("failed", error=str(err)) if started else status_html("idle"),
                v.current_run: None,
                **self._buttons(running=False),
            }
            return
        finally:
            with contextlib.suppress(Exception):
                await updates.aclose()
        yield self._finished(last, owner, progress)

    def _finished(
        self, last: RunUpdate | None, owner: str | None, progress: Progress | None
    ) -> Updates:
        """The result of a run that ended: its audio and facts, or why it did not succeed."""
        v = self.view
        done = {v.current_run: None, **self._buttons(running=False)}
        if last is None:
            return {v.status: status_html("failed", error="The run ended without news."), **done}
        record = self.studio.library.get(last.run_id, owner) if last.run_id else None
        if last.status != "succeeded" or record is None or not last.audio_path:
            return {
                v.status: status_html(
                    last.status,
                    elapsed=last.elapsed,
                    prediction_id=last.prediction_id if record and record.engine != LOCAL else None,
                    error=last.error,
                ),
                **done,
            }
        snap = self.studio.snapshot(record)
        summary = self.studio.service.summary(record.id, owner)
        fmt = record.audio_format or "audio"
        return {
            v.status: status_html(
                "succeeded",
                elapsed=last.elapsed,
                prediction_id=last.prediction_id if record.engine != LOCAL else None,
            ),
            # The last progress line may come before the final one: the run is complete.
            v.progress: _progress(progress, complete=True),
            v.result_audio: snap["audio_path"],
            v.download: gr.update(value=snap["audio_path"], visible=True, label=f"Download .{fmt}"),
            v.facts: facts_html(summary),
            v.last_run: snap,
            **self._actions(True),
            **done,
        }

    async def resume_mine(self, owner_value: Any, token_value: Any) -> None:
        """Pick up this visitor's runs left in flight by an earlier start, with their token.

        With a server token the app resumes every run at start; a visitor's token is never
        stored, so their runs can only be resumed while they are here with it.
        """
        token = self.studio.token(token_value)
        if token is None:
            return
        owner = self.studio.owner(owner_value)
        key = owner or ""
        in_flight = self.studio.library.in_flight()
        if key in self._resuming or not any(owner in (None, r.owner) for r in in_flight):
            return
        self._resuming.add(key)
        try:
            await self.studio.service.resume_in_flight(token=token, owner=owner)
        finally:
            self._resuming.discard(key)

    async def cancel_pressed(self, run_id: str | None, owner_value: Any) -> Updates:
        return cancel_now(self.studio, run_id, owner_value, self.view.status, self.controls.cancel)

    async def after_cancel(self, run_id: str | None, owner_value: Any) -> Updates:
        """Cancel was pressed: wait until the run is recorded as ended, then say so."""
        return {
            self.view.status: await ended_status(self.studio, run_id, owner_value),
            self.view.current_run: None,
            **self._buttons(running=False),
        }
