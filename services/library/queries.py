"""What the library lists and looks up: the history's pages, search and filters, counts,
runs in flight, an entry's runs, and the facts the estimate and the orphan check read.

Every query is one read transaction and keeps to one owner's rows unless told otherwise.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from services.library.records import (
    IN_FLIGHT_STATUSES,
    INNER_KINDS,
    RUN_KINDS,
    STATUSES,
    RunRecord,
    check_owner,
    check_status,
    owner_clause,
)
from services.library.schema import Database

MAX_PER_PAGE = 100


@dataclass(frozen=True)
class Page:
    """One page of a library query, newest first; `page` is 1-based."""

    items: list[RunRecord]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


class Queries:
    """Reads over many rows of the library's database."""

    def __init__(self, db: Database):
        self._db = db

    def _records(self, sql: str, args: Iterable[Any]) -> builtins.list[RunRecord]:
        """The rows `sql` selects (`SELECT * ...`), as records."""
        with self._db.read() as conn:
            rows = conn.execute(sql, builtins.list(args)).fetchall()
        return [RunRecord.from_row(r) for r in rows]

    def list(
        self,
        owner: str | None = None,
        *,
        page: int = 1,
        per_page: int = 12,
        search: str | None = None,
        status: str | None = None,
        model: str | None = None,
        favourite: bool | None = None,
        inner: bool = False,
        key: str | None = None,
        bpm_range: tuple[float | None, float | None] = (None, None),
    ) -> Page:
        """One page of entries, newest first; a page past the end gives the last page.

        Runs that belong inside a composition (its parts, its variations) are left out unless
        `inner`: the history lists the composition once. `key` ("A minor") and `bpm_range`
        (either end open) filter on the measured tempo and key.
        """
        check_owner(owner)
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE}; got {per_page}")
        where = ["1 = 1"]
        args: list[Any] = []
        if not inner:
            where.append(f"kind NOT IN ({', '.join('?' for _ in INNER_KINDS)})")
            args.extend(INNER_KINDS)
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if search and search.strip():
            # instr on a casefolded copy: Unicode-aware, and % or _ match only themselves.
            where.append("instr(prompt_key, ?) > 0")
            args.append(search.strip().casefold())
        if status is not None:
            check_status(status)
            where.append("status = ?")
            args.append(status)
        if model:
            where.append("model_version = ?")
            args.append(model)
        if favourite is not None:
            where.append("favourite = ?")
            args.append(int(favourite))
        if key:
            where.append("key = ?")
            args.append(key)
        for bound, op in zip(bpm_range, (">=", "<="), strict=True):
            if bound is not None:
                where.append(f"bpm {op} ?")
                args.append(float(bound))
        clause = " AND ".join(where)
        with self._db.read() as conn:
            total = conn.execute(f"SELECT COUNT(*) FROM runs WHERE {clause}", args).fetchone()[0]
            pages = max(1, -(-total // per_page))
            page = min(max(1, int(page)), pages)
            rows = conn.execute(
                f"SELECT * FROM runs WHERE {clause}"
                " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
                [*args, per_page, (page - 1) * per_page],
            ).fetchall()
        return Page([RunRecord.from_row(r) for r in rows], total, page, per_page)

    def counts(self, owner: str | None = None) -> dict[str, int]:
        """How many runs: `total`, `favourite`, `in_flight` and one key per status."""
        check_owner(owner)
        where, args = owner_clause(owner)
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT status, COUNT(*), SUM(favourite) FROM runs WHERE 1 = 1{where}"
                " GROUP BY status",
                args,
            ).fetchall()
        counts = dict.fromkeys(STATUSES, 0)
        favourites = 0
        for status, n, fav in rows:
            counts[status] = counts.get(status, 0) + n
            favourites += fav or 0
        counts["total"] = sum(n for _, n, _ in rows)
        counts["favourite"] = favourites
        counts["in_flight"] = sum(counts[s] for s in IN_FLIGHT_STATUSES)
        return counts

    def in_flight(self, kinds: Iterable[str] = RUN_KINDS) -> builtins.list[RunRecord]:
        """Entries of `kinds` (engine runs by default) of every owner that were pending,
        starting or processing; oldest first."""
        marks = ", ".join("?" for _ in IN_FLIGHT_STATUSES)
        kinds = tuple(kinds)
        kind_marks = ", ".join("?" for _ in kinds)
        return self._records(
            f"SELECT * FROM runs WHERE status IN ({marks}) AND kind IN ({kind_marks})"
            " ORDER BY created_at, id",
            [*sorted(IN_FLIGHT_STATUSES), *kinds],
        )

    def children(self, parent_id: str, owner: str | None = None) -> builtins.list[RunRecord]:
        """The runs filed inside an entry (its parts, its variations), oldest first."""
        where, args = owner_clause(owner)
        return self._records(
            f"SELECT * FROM runs WHERE parent_id = ?{where} ORDER BY created_at, id",
            [parent_id, *args],
        )

    def replicate_runs_since(
        self, since: float, owner: str | None = None
    ) -> builtins.list[RunRecord]:
        """Replicate runs (not compositions) created at or after `since`, of `owner` (everyone's
        for None), oldest first: what an orphan found in the account may belong to."""
        where, args = owner_clause(owner)
        kinds = ", ".join("?" for _ in RUN_KINDS)
        return self._records(
            f"SELECT * FROM runs WHERE engine = 'replicate' AND created_at >= ?"
            f" AND kind IN ({kinds}){where} ORDER BY created_at, id",
            [since, *RUN_KINDS, *args],
        )

    def predict_rates(self, model_version: str, *, limit: int = 50) -> builtins.list[float]:
        """Seconds of GPU work per second of audio of the latest succeeded Replicate runs of
        `model_version` (every owner's: it measures the hardware, not the visitor)."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT predict_time / audio_seconds FROM runs WHERE engine = 'replicate'"
                " AND status = 'succeeded' AND model_version = ? AND predict_time > 0"
                " AND audio_seconds > 0 ORDER BY created_at DESC LIMIT ?",
                [model_version, int(limit)],
            ).fetchall()
        return [float(r[0]) for r in rows]

    def find_by_prediction(self, prediction_id: str, owner: str | None = None) -> RunRecord | None:
        """The run made by this prediction (for this owner when one is given)."""
        check_owner(owner)
        where, args = owner_clause(owner)
        found = self._records(
            f"SELECT * FROM runs WHERE prediction_id = ?{where} ORDER BY rowid LIMIT 1",
            [prediction_id, *args],
        )
        return found[0] if found else None

    def known_predictions(self, owner: str | None = None) -> set[str]:
        """Every prediction id already in this owner's library (all owners for None)."""
        check_owner(owner)
        where, args = owner_clause(owner)
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT prediction_id FROM runs WHERE prediction_id IS NOT NULL{where}", args
            ).fetchall()
        return {r[0] for r in rows}
