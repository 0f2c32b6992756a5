"""What runs cost and hold: the spending caps' counts and the size cap, over the runs table.

A Replicate run counts against its payer's allowance (and the deployment's) for 24 hours from
its creation: while it is in flight with the GPU seconds it reserved when it started (its
estimate), once it ended with its measured `predict_time` (0 when it never ran). A reservation
therefore settles by itself when its run is filed, and one stranded by a crash stops counting
once its row is older than the in-flight window: nothing can hold an allowance for good.
Only engine runs (takes, parts, variations, a loop's source) count; an entry that groups them
(a piece, a group, a loop) repeats its runs' figures and is never counted itself.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from services.library.layout import Layout
from services.library.records import (
    FINISHED_STATUSES,
    IN_FLIGHT_STATUSES,
    RUN_KINDS,
    RunRecord,
    check_owner,
    owner_clause,
)
from services.library.schema import Database

_IN_FLIGHT = sorted(IN_FLIGHT_STATUSES)
_FLIGHT_MARKS = ", ".join("?" for _ in _IN_FLIGHT)
_KIND_MARKS = ", ".join("?" for _ in RUN_KINDS)
_FINISHED = sorted(FINISHED_STATUSES)
_FINISHED_MARKS = ", ".join("?" for _ in _FINISHED)
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


def spent(
    conn: sqlite3.Connection, payer: str | None, *, since: float, in_flight_since: float
) -> Spent:
    """GPU seconds of Replicate runs created since `since` and runs in flight created since
    `in_flight_since` (any engine), of `payer` (everyone's for None)."""
    where, args = owner_clause(payer, "payer")
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
    where, args = owner_clause(payer, "payer")
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
    where, args = owner_clause(owner)
    rows = conn.execute(
        f"SELECT * FROM runs WHERE favourite = 0 AND audio_bytes > 0"
        f" AND status IN ({_FINISHED_MARKS}){where} ORDER BY created_at, id",
        [*_FINISHED, *args],
    ).fetchall()
    return [r for r in rows if r["id"] not in keep]


def kept_bytes(conn: sqlite3.Connection, owner: str | None) -> int:
    """Bytes of audio of `owner` (everyone for None) that the size cap may not remove:
    favourites and runs not finished."""
    where, args = owner_clause(owner)
    row = conn.execute(
        f"SELECT COALESCE(SUM(audio_bytes), 0) FROM runs WHERE audio_bytes > 0"
        f" AND (favourite != 0 OR status NOT IN ({_FINISHED_MARKS})){where}",
        [*_FINISHED, *args],
    ).fetchone()
    return int(row[0])


def stored_bytes(conn: sqlite3.Connection, owner: str | None) -> int:
    """Bytes of audio `owner` (everyone for None) keeps in the library."""
    where, args = owner_clause(owner)
    row = conn.execute(
        f"SELECT COALESCE(SUM(audio_bytes), 0) FROM runs WHERE 1 = 1{where}", args
    ).fetchone()
    return int(row[0])


def check_cap(max_mb: float | None) -> None:
    """Refuse a size cap that is not a positive number of megabytes."""
    if max_mb is not None and not (max_mb > 0 and math.isfinite(max_mb)):
        raise ValueError(f"MUSICGEN_MAX_LIBRARY_MB must be a positive number; got {max_mb!r}")


class Accounting:
    """The library's sums: spending per payer, stored audio, and the size cap `max_mb`
    (megabytes per owner, checked by `check_cap`; None: no cap) that removes old runs."""

    def __init__(self, db: Database, layout: Layout, max_mb: float | None):
        self._db = db
        self._layout = layout
        self.max_mb = max_mb

    def spent(self, payer: str | None, *, since: float, in_flight_since: float) -> Spent:
        """GPU seconds (settled, or reserved while in flight) of `payer`'s Replicate runs
        created since `since`, and their runs in flight (everyone's for None)."""
        with self._db.read() as conn:
            return spent(conn, payer, since=since, in_flight_since=in_flight_since)

    def spending_times(
        self, payer: str | None, *, since: float, in_flight_since: float
    ) -> list[tuple[float, float, bool]]:
        """(created_at, GPU seconds counted, in flight) of each of `payer`'s counted runs."""
        with self._db.read() as conn:
            return spending_times(conn, payer, since=since, in_flight_since=in_flight_since)

    def total_bytes(self, owner: str | None = None) -> int:
        """Bytes of stored audio (this owner's, or everyone's for None)."""
        check_owner(owner)
        with self._db.read() as conn:
            return stored_bytes(conn, owner)

    def room_left(self, owner: str | None) -> int | None:
        """Bytes `owner` (everyone for None) may still store once the size cap has removed
        all it may of theirs; None without a cap. At or below 0 nothing new fits."""
        if self.max_mb is None:
            return None
        with self._db.read() as conn:
            kept = kept_bytes(conn, owner)
        return int(self.max_mb * 1024 * 1024) - kept

    def enforce_cap(self, owner: str | None = None, *, keep: Iterable[str] = ()) -> list[RunRecord]:
        """With `max_mb`: delete `owner`'s oldest finished, non-favourite runs that hold audio
        until their stored audio fits; returns the removed runs so the caller can say so.

        On a shared deployment the cap is each visitor's (`owner`): making room never touches
        another's runs. None spans every owner (a local install). Runs in `keep` (e.g. the one
        just finished) are never removed.
        """
        if self.max_mb is None:
            return []
        cap = int(self.max_mb * 1024 * 1024)
        removed: list[RunRecord] = []
        with self._db.write() as conn:
            total = stored_bytes(conn, owner)
            if total <= cap:
                return []
            for row in evictable(conn, owner, set(keep)):
                if total <= cap:
                    break
                record = RunRecord.from_row(row)
                conn.execute("DELETE FROM runs WHERE id = ?", [record.id])
                total -= record.audio_bytes or 0
                removed.append(record)
        for record in removed:
            self._layout.remove_files(record)
        return removed
