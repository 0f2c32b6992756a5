"""The Replicate engine: meta/musicgen (the public model, or a deployment of it) over HTTP.

Starting a run uploads its clip and creates the prediction; following it is the client's
stream-or-poll follower; a succeeded run's output is downloaded at once (Replicate deletes API
outputs after about an hour) and checked to be the audio that was asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from services.audio import AudioInfo, MeasuredClip, check_output, prepare_input_audio
from services.cost import cancel_after_seconds
from services.engines.protocol import REPLICATE, EngineRun, Turn
from services.engines.replicate.webhooks import WebhookRegistry
from services.errors import FieldError, OutputExpired, StudioError
from services.events import (
    DOWNLOADING,
    RunUpdate,
    output_url,
    parse_seed,
    progress_reading,
    seed_reading,
    split_log_lines,
)
from services.library.records import RunRecord
from services.musicgen import DEFAULT_MODEL, MODEL_VERSIONS, GenerationRequest
from services.orphans import OrphanCheck, Stray, find_strays, sent_input
from services.replicate import ReplicateClient
from services.replicate.follow import Nudges
from services.replicate.http import parse_timestamp
from services.replicate.predictions import PRESENT, Prediction, same_input
from services.replicate.webhooks import WebhookSecret
from services.validation import replicate_model_errors

EXPIRED_MESSAGE = "Replicate no longer has this run's audio (it keeps outputs ~1 hour)."
LOST_MESSAGE = "The run was paid for, but its audio expired before it could be downloaded."

log = logging.getLogger(__name__)


@dataclass
class _RunState:
    """A Replicate run's bookkeeping: the newest view of its prediction, its request, and
    whether this process asked for its webhooks."""

    prediction: Prediction
    request: GenerationRequest
    webhook: bool = False


def _state(run: EngineRun) -> _RunState:
    if not isinstance(run.engine_state, _RunState):
        raise TypeError(f"run {run.id} was not started by the Replicate engine")
    return run.engine_state


class ReplicateModel:
    """meta/musicgen's models and rules: what a Replicate run accepts, known without a token."""

    name = REPLICATE
    label = "Replicate"

    def model_choices(self) -> Mapping[str, str]:
        return MODEL_VERSIONS

    def default_model(self) -> str:
        return DEFAULT_MODEL

    def check(self, request: GenerationRequest) -> list[FieldError]:
        return replicate_model_errors(request)


class ReplicateEngine(ReplicateModel):
    """One visitor's (or the server's) Replicate account, as an `Engine`."""

    def __init__(
        self,
        client: ReplicateClient,
        *,
        deployment: str | None = None,
        webhooks: WebhookRegistry | None = None,
    ):
        self._client = client
        self._deployment = deployment
        self._webhooks = webhooks

    def admit(self, turn: Turn) -> None:
        """Replicate queues runs itself: nothing to refuse here."""

    async def start(
        self,
        request: GenerationRequest,
        *,
        workdir: Path,
        clip: MeasuredClip | None = None,
        turn: Turn | None = None,
    ) -> EngineRun:
        audio_uri = None
        if request.input_audio:
            # Converted where the model needs it (browser recordings), then sent as a data URL
            # or through the files API.
            prepared = await asyncio.to_thread(
                prepare_input_audio, Path(request.input_audio), workdir, measured=clip
            )
            audio_uri = await self._client.files.upload(prepared.path, prepared.content_type)
        # A webhook only once the account's secret is known: one that cannot be checked is
        # worth nothing, and the run is then followed by polling alone.
        webhook = None
        if self._webhooks is not None and await self._webhook_secret() is not None:
            webhook = self._webhooks.url
        created = await self._client.predictions.start(
            request.to_api_input(audio_uri),
            cancel_after=cancel_after_seconds(request.duration),
            webhook=webhook,
            webhook_events=self._webhooks.events if self._webhooks else (),
        )
        return self._run(
            created.prediction, request, unclear=bool(created.unclear), webhook=webhook is not None
        )

    async def _webhook_secret(self) -> WebhookSecret | None:
        """The account's webhook secret when webhooks are armed and it can be had, else None."""
        if self._webhooks is None or not self._webhooks.armed:
            return None
        try:
            return await self._webhooks.secret(self._client)
        except StudioError as exc:
            log.warning("no webhooks for now: the account's webhook secret is unavailable: %s", exc)
            return None

    def _run(
        self,
        prediction: Prediction,
        request: GenerationRequest,
        *,
        unclear: bool = False,
        webhook: bool = False,
    ) -> EngineRun:
        """`unclear`: the create met an unclear answer on the way (see Created); `webhook`:
        this process asked for the run's webhooks."""
        return EngineRun(
            id=prediction["id"],
            engine=REPLICATE,
            checkpoint=self._deployment or request.model_version,
            status=str(prediction.get("status") or "starting"),
            unclear_create=unclear,
            engine_state=_RunState(prediction, request, webhook),
        )

    async def follow(
        self, run: EngineRun, *, started: float, workdir: Path
    ) -> AsyncIterator[RunUpdate]:
        state = _state(run)
        prediction = state.prediction or await self._client.predictions.get(run.id)
        final: RunUpdate | None = None
        secret = await self._webhook_secret()
        with contextlib.ExitStack() as stack:
            nudges: Nudges | None = None
            policy = None
            if secret is not None and self._webhooks is not None:
                # Webhooks for this run reach the follower (a resumed run's too, if it asked for
                # them); polling becomes the rare fallback when this process asked for them.
                nudges = stack.enter_context(self._webhooks.watching(run.id, secret))
                if state.webhook:
                    policy = self._webhooks.fallback_policy(self._client.follow_policy)
            async for update in self._client.follow(
                prediction,
                started=started,
                nudges=nudges,
                policy=policy,
                progress=progress_reading,
                seed=seed_reading,
            ):
                if update.finished:
                    final = update
                    break
                yield update
        if final is None:  # the follower ended without a verdict
            yield RunUpdate("failed", prediction_id=run.id, error="Lost track of the run.")
            return
        metrics = final.prediction.get("metrics") or {}
        final = replace(
            final,
            seed=final.seed if final.seed is not None else _seed_from_logs(final.prediction),
            predict_time=metrics.get("predict_time"),
        )
        if final.status != "succeeded":
            yield final
            return
        request = state.request
        async for step in self._deliver(final, request, workdir):
            yield step

    async def _deliver(
        self, final: RunUpdate, request: GenerationRequest, workdir: Path
    ) -> AsyncIterator[RunUpdate]:
        """The succeeded run with its audio fetched and checked: a few quick tries, then, while
        its URL lives, one try after each of a growing pause, each announced as a
        "downloading" update (try n); lost only once the URL has expired."""
        files = self._client.files
        deadline = output_deadline(final.prediction, files.output_lifetime)
        tries = files.download_retry.attempts
        try:
            audio, info = await self._download(final.prediction, request, workdir)
        except OutputExpired as err:
            yield replace(final, status="lost", error=f"{err} {LOST_MESSAGE}")
            return
        except StudioError as err:
            failure: StudioError = err
            pause = 0
            while True:
                left = deadline - time.time()
                if left <= 0:
                    message = f"It could not be downloaded while it lasted ({failure})."
                    yield replace(final, status="lost", error=f"{message} {LOST_MESSAGE}")
                    return
                pause += 1
                tries += 1
                log.warning(
                    "run %s: audio not fetched yet (%s); try %d",
                    final.prediction_id,
                    failure,
                    tries,
                )
                yield replace(final, status=DOWNLOADING, error=downloading_note(tries, failure))
                await asyncio.sleep(min(files.download_patience.backoff(pause), left))
                try:
                    audio, info = await self._download(
                        final.prediction, request, workdir, once=True
                    )
                    break
                except OutputExpired as expired:
                    yield replace(final, status="lost", error=f"{expired} {LOST_MESSAGE}")
                    return
                except StudioError as again:
                    failure = again
        yield replace(final, audio_path=str(audio), audio_seconds=info.seconds, error=None)

    async def _download(
        self,
        prediction: Mapping[str, Any],
        request: GenerationRequest,
        workdir: Path,
        *,
        once: bool = False,
    ) -> tuple[Path, AudioInfo]:
        """The output, fetched and checked (quick tries unless `once`; see download_checked)."""
        url = output_url(prediction)
        if url is None:
            raise OutputExpired(EXPIRED_MESSAGE)
        fmt = "mp3" if url.split("?")[0].endswith(".mp3") else request.output_format
        dest = workdir / f"out.{fmt}"
        expected = float(request.duration)
        info = await self._client.files.download_checked(
            url, dest, lambda path: check_output(path, expected), once=once
        )
        return dest, info

    async def cancel(self, run: EngineRun) -> str:
        answer = await self._client.predictions.cancel(run.id)
        if answer.get("id") == run.id:
            # The newest view of the run: a follow after a late cancel starts from its end.
            _state(run).prediction = answer
        return str(answer.get("status") or "canceled")

    async def resume(self, record: RunRecord, *, workdir: Path) -> EngineRun | None:
        request = GenerationRequest.from_dict(record.request)
        if record.prediction_id is not None:
            prediction = await self._client.predictions.get(record.prediction_id)
            return self._run(prediction, request)
        # The create's answer never reached the library (a crash during the create): look for
        # the run it made. The uploaded clip's URL was never recorded: any clip will do.
        wanted = sent_input(record, PRESENT)
        # The listing may lag behind the create: look several times before deciding.
        found = await self._client.predictions.look_for_created(
            wanted, _local_time(record.created_at)
        )
        return None if found is None else self._run(found, request)

    async def strays(
        self, records: Sequence[RunRecord], known: set[str], since: float, check: OrphanCheck
    ) -> list[Stray]:
        """This account's runs made for `records` that no library holds (see services.orphans),
        looked for `check.looks` times: the listing may lag behind a create."""
        found: list[Stray] = []

        def matches(record: RunRecord, seen: Any) -> bool:
            return same_input(sent_input(record, PRESENT), seen)

        for look in range(check.looks):
            listed = await self._client.predictions.since(_local_time(since))
            ours = [p for p in listed if self._client.predictions.ours(p)]
            found += find_strays(ours, records, known, matches)
            if look < check.looks - 1:
                await asyncio.sleep(check.interval)
        return found

    def adopt(self, prediction: Prediction, record: RunRecord) -> EngineRun:
        """A found prediction as the run of `record`, to follow and file."""
        return self._run(prediction, GenerationRequest.from_dict(record.request))

    async def aclose(self) -> None:
        await self._client.aclose()


def output_deadline(prediction: Mapping[str, Any], lifetime: float) -> float:
    """When (epoch) the run's output URL expires: `lifetime` after it completed (after now,
    when the prediction does not say)."""
    completed = parse_timestamp(prediction.get("completed_at"))
    return (completed.timestamp() if completed else time.time()) + lifetime


def downloading_note(tries: int, failure: StudioError) -> str:
    """What the page and the API show while a paid run's audio is being fetched again."""
    return (
        f"Downloading (try {tries}): the run succeeded and is paid for, but its audio could not "
        f"be fetched yet ({failure}). Trying again while Replicate keeps it (about an hour)."
    )


def _seed_from_logs(prediction: Mapping[str, Any]) -> int | None:
    return parse_seed(split_log_lines(prediction.get("logs") or ""))


def _local_time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch).astimezone()
