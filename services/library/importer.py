"""Import an account's earlier meta/musicgen runs from Replicate into the library.

Each finished prediction not yet in the owner's library is added once, with its inputs as the
request, its status, times, seed (from `Using seed N` in the logs), error and predict time:
- succeeded, output still there: downloaded, checked to decode, stored -> `succeeded`;
- succeeded, but Replicate already removed the output (`data_removed`, or the download answers
  404/410) or the file does not decode -> `lost` with `data_removed` and the reason in `error`
  (the library's rule: `succeeded` always means the audio is on disk);
- failed / canceled / aborted: added with that status and the API's error.
Runs still in flight on Replicate are left for a later import (the studio may be following them
itself right now). A download that fails for a passing reason (network, 5xx) is not added, so
the next import tries again; it is listed in `ImportReport.problems`.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.audio import probe
from services.errors import AudioError, OutputExpired, StudioError
from services.events import TERMINAL_STATUSES, output_url, parse_seed, split_log_lines
from services.library import AlreadyInLibrary, Library, RunRecord
from services.library.records import to_epoch
from services.musicgen import GenerationRequest
from services.replicate import ReplicateClient

MODEL = "meta/musicgen"
REMOVED_NOTE = (
    "Replicate removed this run's audio before it was imported "
    "(it keeps the outputs of API runs for about an hour)."
)
INPUTS_REMOVED_NOTE = " Its settings were removed too."
AUDIO_EXTENSIONS = ("wav", "mp3")


@dataclass(frozen=True)
class ImportReport:
    """What an import did; `added` = `with_audio` + `removed` + runs that had failed etc."""

    added: int = 0
    with_audio: int = 0  # added with their audio stored
    removed: int = 0  # added as lost: Replicate had already removed the audio
    skipped: int = 0  # already in the library
    other_models: int = 0  # predictions of other models, ignored
    in_flight: int = 0  # still running on Replicate: import again once they finish
    problems: tuple[str, ...] = field(default_factory=tuple)  # not added; retried next time
    run_ids: tuple[str, ...] = field(default_factory=tuple)  # library ids of the added runs

    @property
    def message(self) -> str:
        """One line for the musician."""
        if not self.added:
            text = "Nothing new to import"
        else:
            text = f"Imported {self.added} run(s): {self.with_audio} with audio"
            if self.removed:
                text += f", {self.removed} whose audio Replicate had already removed"
        if self.skipped:
            text += f"; {self.skipped} already in your library"
        if self.in_flight:
            text += f"; {self.in_flight} still running (import again once they finish)"
        if self.problems:
            text += f"; {len(self.problems)} could not be fetched now (try again later)"
        return text + "."


def is_musicgen(prediction: Mapping[str, Any], version: str | None) -> bool:
    """A prediction of meta/musicgen (by model name, or by the configured version id)."""
    if prediction.get("model") == MODEL:
        return True
    return version is not None and prediction.get("version") == version


def request_from_input(api_input: Mapping[str, Any] | None) -> dict[str, Any]:
    """The library's request for an API `input`; empty when Replicate removed the inputs."""
    if not api_input:
        return {}
    data = dict(api_input)
    audio = data.get("input_audio")
    if isinstance(audio, str) and audio.startswith("data:"):
        # An inline clip can be hundreds of KB; the library keeps only that there was one.
        data["input_audio"] = "data: URL (inline clip, not kept)"
    # A seed of 0 or -1 (random) becomes None; a value of an unexpected shape, the default.
    return GenerationRequest.from_dict(data).to_dict()


def _time(value: Any) -> float | None:
    try:
        return to_epoch(value)
    except (TypeError, ValueError):
        return None


def _facts(prediction: Mapping[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
    """Everything but the audio, as `Library.add_run` fields."""
    logs = prediction.get("logs") or ""
    seed = parse_seed(split_log_lines(logs))
    if seed is None and isinstance(request.get("seed"), int):
        seed = request["seed"]  # logs removed: a fixed seed in the input is the seed used
    metrics = prediction.get("metrics") or {}
    predict_time = metrics.get("predict_time")
    return {
        "prediction_id": prediction["id"],
        "created_at": _time(prediction.get("created_at")),
        "started_at": _time(prediction.get("started_at")),
        "completed_at": _time(prediction.get("completed_at")),
        "predict_time": predict_time if isinstance(predict_time, (int, float)) else None,
        "seed": seed,
        "error": prediction.get("error") or None,
        "logs_tail": logs,
        "data_removed": bool(prediction.get("data_removed")),
    }


def _audio_format(url: str, request: Mapping[str, Any]) -> str:
    ext = url.split("?", 1)[0].rsplit(".", 1)[-1].lower()
    if ext in AUDIO_EXTENSIONS:
        return ext
    return str(request.get("output_format") or "wav")


async def _add(
    library: Library, owner: str | None, request: dict[str, Any], **fields: Any
) -> RunRecord:
    return await asyncio.to_thread(library.add_run, owner, request, source="import", **fields)


async def _import_one(
    client: ReplicateClient,
    library: Library,
    owner: str | None,
    prediction: Mapping[str, Any],
) -> RunRecord:
    """Add one finished prediction; raises StudioError for a passing download problem."""
    request = request_from_input(prediction.get("input"))
    facts = _facts(prediction, request)
    status = prediction["status"]
    if status != "succeeded":
        return await _add(library, owner, request, status=status, **facts)
    url = output_url(prediction)
    reason = REMOVED_NOTE
    if url and not facts["data_removed"]:
        fmt = _audio_format(url, request)
        with tempfile.TemporaryDirectory(prefix="musicgen-import-") as workdir:
            try:
                path = await client.files.download(url, Path(workdir) / f"out.{fmt}")
                info = await asyncio.to_thread(probe, path)
                return await _add(
                    library,
                    owner,
                    request,
                    status="succeeded",
                    audio_src=path,
                    audio_format=fmt,
                    audio_seconds=info.seconds,
                    **facts,
                )
            except OutputExpired:
                pass
            except AudioError as err:
                reason = f"The audio Replicate returned could not be read: {err}"
    if not request:
        reason += INPUTS_REMOVED_NOTE
    facts.update(data_removed=True, error=reason)
    return await _add(library, owner, request, status="lost", **facts)


async def import_account(
    client: ReplicateClient,
    library: Library,
    owner: str | None,
    *,
    version: str | None = None,
) -> ImportReport:
    """Add the account's finished meta/musicgen runs this owner's library does not have yet.

    `version` is the configured model version id, also accepted when a prediction lacks
    `model`. Listing errors (bad token, API down) propagate as the client's StudioErrors.
    """
    known = await asyncio.to_thread(library.known_predictions, owner)
    added: list[RunRecord] = []
    problems: list[str] = []
    skipped = other = in_flight = 0
    async for prediction in client.predictions.list():
        prediction_id = prediction.get("id")
        if not isinstance(prediction_id, str) or not prediction_id:
            continue
        if not is_musicgen(prediction, version):
            other += 1
        elif prediction_id in known:
            skipped += 1
        elif prediction.get("status") not in TERMINAL_STATUSES:
            in_flight += 1
        else:
            try:
                added.append(await _import_one(client, library, owner, prediction))
            except AlreadyInLibrary:  # stored meanwhile (a run the studio just finished)
                skipped += 1
            except StudioError as err:
                problems.append(f"{prediction_id}: {err}")
            # Listings can repeat an item when new runs shift the pages.
            known.add(prediction_id)
    return ImportReport(
        added=len(added),
        with_audio=sum(1 for r in added if r.has_audio),
        removed=sum(1 for r in added if r.status == "lost"),
        skipped=skipped,
        other_models=other,
        in_flight=in_flight,
        problems=tuple(problems),
        run_ids=tuple(r.id for r in added),
    )
