"""Generate and Cancel for one visitor: validation first, then the live run, then the result."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import gradio as gr

from services.engines.protocol import LOCAL
from services.errors import RequestInvalid, StudioError
from services.events import Progress, RunUpdate
from services.generation import GenerationService, PreparedRun
from services.library import Library
from services.run_signals import RunEnd
from ui.context import Studio
from ui.engine_picker import model_for
from ui.events import Updates
from ui.form_rules import form_values, request_values
from ui.formatting import (
    errors_html,
    idle_progress_html,
    message_html,
    progress_html,
    status_html,
    warnings_html,
)
from ui.run_panel import Controls, RunView
from ui.run_stream import RunButtons, Stream, stream

LOG_LINES_SHOWN = 400
SETTLE_TIMEOUT_S = 15.0
# Progress-only changes reach the page at most this often: the local engine reports every
# decoding step (50 a second of audio), and each update the page gets costs the server a
# Gradio round (postprocess, diff, send) that on a fast device cost more than the take. Twice a
# second still moves the bar smoothly (its fill eases over 0.3 s).
PAGE_REFRESH_S = 0.5


def progress_view(progress: Progress | None, *, complete: bool = False) -> str:
    """The progress bar for the tokens written so far (all of them once `complete`)."""
    if progress is None:
        return progress_html(None, None)
    done = progress.total if complete else progress.done
    return progress_html(done, progress.total)


class RunSeen:
    """What one run has shown so far (its logs and progress), turned into the panel's lines.

    Progress-only news is sent at most every `PAGE_REFRESH_S`, and the logs only when they
    grew: each update the page gets costs the server a Gradio round."""

    def __init__(self) -> None:
        self.logs: list[str] = []
        self.progress: Progress | None = None
        self._shown: tuple[Any, ...] = ()  # what the page was last sent, beyond progress
        self._shown_logs = 0
        self._sent_at = 0.0
        self.previewing = False  # the preview player is shown, in the result's place
        self.run_id: str | None = None  # the run's id as the page has it (for Cancel)

    def show(self, view: Any, update: RunUpdate, elapsed: float, *, link: bool) -> Updates | None:
        """The status, progress and logs of `view` (any panel with those three) for `update`;
        `elapsed` is the page's own clock since the click. None: nothing worth sending yet."""
        self.logs.extend(update.new_logs)
        self.progress = update.progress or self.progress
        news = (update.status, update.queue_position, update.error, update.run_id)
        now = time.monotonic()
        if (
            news == self._shown
            and not update.preview_path
            and not update.finished
            and now - self._sent_at < PAGE_REFRESH_S
        ):
            return None  # only progress moved, and the page saw it a moment ago
        self._shown, self._sent_at = news, now
        changes: Updates = {
            view.status: status_html(
                update.status,
                elapsed=elapsed,
                prediction_id=update.prediction_id if link else None,
                error=update.error,
                queue_position=update.queue_position,
            ),
            view.progress: progress_view(self.progress),
        }
        if len(self.logs) != self._shown_logs:
            changes[view.logs] = "\n".join(self.logs[-LOG_LINES_SHOWN:])
            self._shown_logs = len(self.logs)
        return changes


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
        self.buttons = RunButtons(controls.generate, controls.cancel)
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
            v.result_audio,
            v.logs,
            v.current_run,
            v.last_run,
        ]

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
        link = engine != LOCAL  # a Replicate prediction has a page on replicate.com
        seen = RunSeen()

        async def prepare() -> PreparedRun:
            return await asyncio.to_thread(self.studio.service.prepare, values, engine)

        def start(prepared: PreparedRun) -> AsyncIterator[RunUpdate]:
            return self.studio.service.generate(
                prepared,
                token=token,
                owner=owner,
                engine=engine,
                parent_run_id=parent_run or None,
                payer=visitor.payer,
            )

        def begin(prepared: PreparedRun) -> Updates:
            return {
                c.errors: warnings_html(list(prepared.notes)),
                v.status: status_html("validating"),
                v.progress: progress_html(None, None),
                v.logs: "",
            }

        def show(update: RunUpdate, elapsed: float) -> Updates | None:
            lines = seen.show(v, update, elapsed, link=link)
            if lines is None:
                return None
            changes = dict(lines)
            if update.run_id != seen.run_id:  # once: Cancel reads it; a State costs a round
                seen.run_id = changes[v.current_run] = update.run_id
            if update.preview_path:
                # The start of the take plays in the track's place while the rest is made.
                # Its bytes, not its path: gr.Audio runs ffprobe on every file path it is given,
                # and the piece is the engine's own 16-bit wav, which the stream reads anyway.
                piece = Path(update.preview_path).read_bytes()
                if seen.previewing:
                    changes[v.preview] = piece
                else:  # a property update costs a component rebuilt: the player is shown once
                    seen.previewing = True
                    changes[v.preview] = gr.update(value=piece, visible=True)
                    changes[v.result_audio] = gr.update(visible=False)
            return changes

        async def finish(last: RunUpdate | None, elapsed: float) -> Updates:
            return self._finished(last, owner, seen.progress, elapsed)

        def failed(err: StudioError, last: RunUpdate | None) -> Updates:
            # Before the first update nothing was sent (e.g. no token): not a failed run.
            return {
                c.errors: message_html(str(err)),
                v.status: status_html("failed", error=str(err)) if last else status_html("idle"),
                v.progress: idle_progress_html(),
                v.current_run: None,
            }

        def refused(err: RequestInvalid) -> Updates:
            return {c.errors: errors_html(err.errors), v.status: status_html("idle")}

        how = Stream(
            self.buttons, prepare, start, begin, show, finish, refused, failed,
            begin_with_first=engine == LOCAL,
        )  # fmt: skip
        async for changes in stream(how):
            yield changes

    def _finished(
        self, last: RunUpdate | None, owner: str | None, progress: Progress | None, elapsed: float
    ) -> Updates:
        """The result of a run that ended: it becomes the selected track, or why it did not."""
        v = self.view
        done: Updates = {v.current_run: None}
        if last is None:
            return {
                v.status: status_html("failed", error="The run ended without news."),
                v.progress: idle_progress_html(),
                **done,
            }
        record = self.studio.library.get(last.run_id, owner) if last.run_id else None
        remote = record is not None and record.engine != LOCAL
        if last.status != "succeeded" or record is None or not last.audio_path:
            return {
                v.status: status_html(
                    last.status,
                    elapsed=elapsed,
                    prediction_id=last.prediction_id if remote else None,
                    error=last.error,
                ),
                v.progress: idle_progress_html(),
                v.preview: gr.update(visible=False),
                v.result_audio: gr.update(visible=True),
                **done,
            }
        return {
            v.status: status_html(
                "succeeded", elapsed=elapsed, prediction_id=last.prediction_id if remote else None
            ),
            # The last progress line may come before the final one: the run is complete.
            v.progress: progress_view(progress, complete=True),
            # The track shows the new result (its player replaces the preview in place).
            v.last_run: self.studio.snapshot(record),
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
        v = self.view
        return {
            v.status: await ended_status(self.studio, run_id, owner_value),
            v.current_run: None,
            v.progress: idle_progress_html(),
            # The canceled take's streamed start goes; the selected result plays there again.
            v.preview: gr.update(value=None, visible=False),
            v.result_audio: gr.update(visible=True),
            **self.buttons.state(running=False),
        }
