"""What runs cost and hold, read from the runs table: the spending caps' and the size cap's SQL.

A Replicate run counts against its payer's allowance (and the deployment's) for 24 hours from
its creation: while it is in flight with the GPU seconds it reserved when it started (its
estimate), once it ended with its measured `predict_time` (0 when it never ran). A reservation
therefore settles by itself when its run is filed, and one stranded by a crash stops counting
once its row is older than the in-flight window: nothing can hold an allowance for good.
Only engine runs (takes, parts, variations, a loop's source) count; an entry that groups them
(a piece, a group, a loop) repeats its runs' figures and is never counted itself.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from services.library.records import FINISHED_STATUSES, IN_FLIGHT_STATUSES, RUN_KINDS

_IN_FLIGHT = sorted(IN_FLIGHT_STATUSES)
_FLIGHT_MARKS = ", ".join("?" for _ in _IN_FLIGHT)
_KIND_MARKS = ", ".join("?" for _ in RUN_KINDS)
# A run's GPU seconds as the caps count them: reserved while in flight (and young enough to be
# live), measured once ended.
_COUNTED = (
    f"CASE WHEN status IN ({_FLIGHT_MARKS}) THEN"
    " (CASE WHEN created_at >= ? THEN COALESCE(reserved_gpu_s, 0) ELSE 0 END)"
    " ELSE COALESCE(predict_time, 0) END"
)


@dataclass(frozen=True)
class Spent:
    """One allowance's use: GPU seconds (settled + reserved) and engine runs in flight."""

    gpu_seconds: float
    runs_in_flight: int


def _payer_clause(payer: str | None) -> tuple[str, list[Any]]:
    return ("", []) if payer is None else (" AND payer = ?", [payer])


def spent(
    conn: sqlite3.Connection, payer: str | None, *, since: float, in_flight_since: float
) -> Spent:
    """GPU seconds of Replicate runs created since `since` and runs in flight created since
    `in_flight_since` (any engine), of `payer` (everyone's for None)."""
    where, args = _payer_clause(payer)
    used = conn.execute(
        f"SELECT COALESCE(SUM({_COUNTED}), 0) FROM runs WHERE engine = 'replicate'"
        f" AND created_at >= ? AND kind IN ({_KIND_MARKS}){where}",
        [*_IN_FLIGHT, in_flight_since, since, *RUN_KINDS, *args],
    ).fetchone()[0]
    running = conn.execute(
        f"SELECT COUNT(*) FROM runs WHERE status IN ({_FLIGHT_MARKS}) AND created_at >= ?"
        f" AND kind IN ({_KIND_MARKS}){where}",
        [*_IN_FLIGHT, in_flight_since, *RUN_KINDS, *args],
    ).fetchone()[0]
    return Spent(float(used), int(running))


def spending_times(
    conn: sqlite3.Connection, payer: str | None, *, since: float, in_flight_since: float
) -> list[tuple[float, float, bool]]:
    """(created_at, GPU seconds counted, still in flight) of each counted run, oldest first:
    when each stops counting is what a refusal tells."""
    where, args = _payer_clause(payer)
    rows = conn.execute(
        f"SELECT created_at, {_COUNTED}, status IN ({_FLIGHT_MARKS}) FROM runs"
        f" WHERE engine = 'replicate' AND created_at >= ? AND kind IN ({_KIND_MARKS}){where}"
        " ORDER BY created_at",
        [*_IN_FLIGHT, in_flight_since, *_IN_FLIGHT, since, *RUN_KINDS, *args],
    ).fetchall()
    return [(float(r[0]), float(r[1]), bool(r[2])) for r in rows if r[1]]


def evictable(conn: sqlite3.Connection, owner: str | None, keep: set[str]) -> list[sqlite3.Row]:
    """`owner`'s (everyone's for None) finished, non-favourite runs holding audio, oldest
    first, except those in `keep`: what the size cap may remove to make room."""
    where, args = ("", []) if owner is None else (" AND owner = ?", [owner])
    marks = ", ".join("?" for _ in FINISHED_STATUSES)
    rows = conn.execute(
        f"SELECT * FROM runs WHERE favourite = 0 AND audio_bytes > 0"
        f" AND status IN ({marks}){where} ORDER BY created_at, id",
        [*sorted(FINISHED_STATUSES), *args],
    ).fetchall()
    return [r for r in rows if r["id"] not in keep]


def kept_bytes(conn: sqlite3.Connection, owner: str | None) -> int:
    """Bytes of audio of `owner` (everyone for None) that the size cap may not remove:
    favourites and runs not finished."""
    where, args = ("", []) if owner is None else (" AND owner = ?", [owner])
    marks = ", ".join("?" for _ in FINISHED_STATUSES)
    row = conn.execute(
        f"SELECT COALESCE(SUM(audio_bytes), 0) FROM runs WHERE audio_bytes > 0"
        f" AND (favourite != 0 OR status NOT IN ({marks})){where}",
        [*sorted(FINISHED_STATUSES), *args],
    ).fetchone()
    return int(row[0])


def stored_bytes(conn: sqlite3.Connection, owner: str | None) -> int:
    """Bytes of audio `owner` (everyone for None) keeps in the library."""
    where, args = ("", []) if owner is None else (" AND owner = ?", [owner])
    row = conn.execute(
        f"SELECT COALESCE(SUM(audio_bytes), 0) FROM runs WHERE 1 = 1{where}", args
    ).fetchone()
    return int(row[0])
