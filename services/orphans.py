"""Runs the studio started on Replicate that its library does not hold: orphans.

An unclear create (no answer, a 5xx, a malformed answer) may have made a run that a lagging
listing did not show in time; a crash may come between a create and its record. Such a run is
found in the account's listing by what the studio sends: its version (or deployment) and the
exact input of a library record of the same time. Then:
- its record never learned its prediction (still pending, failed as "not known whether the
  run started", or canceled by a visitor who gave up during the create): the run is adopted
  into that record (ADOPT), canceled first if the record says canceled, then followed and
  filed as it ends;
- the record already has its own prediction (a duplicate from a create sent again): it gets a
  history entry of its own (FILE_APART), is canceled if still running (no money spent on it
  from now on) and filed as it ends.
Either way audio already paid for is kept, and nothing is left running unseen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.library.records import RunRecord, to_epoch
from services.musicgen import GenerationRequest
from services.replicate.predictions import Prediction

ADOPT = "adopt"
FILE_APART = "file apart"
# A record's create may be retried, or its clock differ from the server's, by this much.
BEFORE_RECORD_S = 60.0
AFTER_RECORD_S = 600.0
# Looked for over the last this many seconds (Replicate keeps an API run's data about an hour).
WINDOW_S = 2 * 3600.0


@dataclass(frozen=True)
class OrphanCheck:
    """How orphans are looked for: `looks` listings `interval` s apart (the listing may lag),
    and, after an unclear create, starting `delay` s later (when a late create has landed)."""

    looks: int = 3
    interval: float = 1.0
    delay: float = 10.0


@dataclass(frozen=True)
class Stray:
    """An orphan prediction, the record it belongs to, and what to do with it."""

    prediction: Prediction
    record: RunRecord
    action: str

    @property
    def cancel_first(self) -> bool:
        """Stop it before filing: its visitor gave up, or it duplicates a run they have."""
        return self.action == FILE_APART or self.record.status == "canceled"


def sent_input(record: RunRecord, present: object) -> dict[str, Any]:
    """The input the record's create sent; an uploaded clip's URL is not known: `present`."""
    request = GenerationRequest.from_dict(record.request)
    wanted = request.to_api_input(None)
    if request.input_audio:
        wanted["input_audio"] = present
    return wanted


def _created(prediction: Mapping[str, Any]) -> float | None:
    try:
        return to_epoch(prediction.get("created_at"))
    except ValueError:
        return None


def _near(record: RunRecord, created: float | None) -> bool:
    if created is None:
        return False
    return record.created_at - BEFORE_RECORD_S <= created <= record.created_at + AFTER_RECORD_S


def _action(record: RunRecord) -> str:
    return ADOPT if record.prediction_id is None else FILE_APART


def find_strays(
    predictions: Iterable[Prediction],
    records: Sequence[RunRecord],
    known: set[str],
    matches: Callable[[RunRecord, Any], bool],
) -> list[Stray]:
    """The listed predictions no library holds, each with the record whose click made it.

    `matches(record, input)` says whether a prediction's input is the record's. A record is
    adopted into at most once; any further match is filed apart.
    """
    strays: list[Stray] = []
    adopted: set[str] = set()
    for prediction in predictions:
        pid = prediction.get("id")
        if not isinstance(pid, str) or pid in known:
            continue
        created = _created(prediction)
        candidates = [
            r for r in records if _near(r, created) and matches(r, prediction.get("input"))
        ]
        if not candidates:
            continue
        # The closest record in time that never learned its run, else the closest.
        candidates.sort(key=lambda r: abs(r.created_at - (created or 0.0)))
        waiting = [r for r in candidates if _action(r) == ADOPT and r.id not in adopted]
        record = waiting[0] if waiting else candidates[0]
        action = ADOPT if waiting else FILE_APART
        if action == ADOPT:
            adopted.add(record.id)
        strays.append(Stray(prediction, record, action))
        known.add(pid)
    return strays
