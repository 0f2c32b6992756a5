"""The library store: SQLite rows and audio files under the data folder; one class, Library.

Layout: `<data_dir>/library.sqlite3` (WAL mode, schema version in `PRAGMA user_version`, see
`library_schema`) and `<data_dir>/audio/<run id>.<format>`. Every file is written atomically.

Owners: `owner=None` means a local single-user install: every query sees every run. A shared
deployment always passes the visitor's identity string; then every read, play (`get` +
`audio_file`), favourite, export and delete is restricted to rows with exactly that owner, so a
visitor can never touch another's run, even by guessing its id (it simply is not found).
`in_flight` is server-side housekeeping and spans every owner; `enforce_cap` makes room in one
owner's share (every owner's on a local install). Spending is counted per payer (a signed-in
account or a client address, see services.library.accounting), not per owner.

Lifecycle: `create_pending` before the prediction exists, `update` as it moves, `attach_audio`
once the output is downloaded; only `attach_audio` (or `add_run` with audio) makes a run
`succeeded`. A run whose output is gone becomes `lost`, with the reason in `error`.

Secrets: the library never stores an API token. Request keys containing "token" are dropped and
token-like text (`r8_...`, `Bearer ...`) in requests, errors and logs is replaced by [redacted].

Concurrency: every call opens its own short-lived connection (busy timeout 15 s) and writes in
`BEGIN IMMEDIATE` transactions, so one instance can be shared by threads and asyncio tasks, and
several processes can use the same data folder. Calls are short and synchronous (well under a
millisecond for a write, a few ms for a page); `close()` releases the one idle connection an
instance keeps open.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import math
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from services.library import accounting
from services.library.export import write_export
from services.library.files import copy_atomic, move_atomic, remove_stale_parts
from services.library.records import (
    FINISHED_STATUSES,
    IN_FLIGHT_STATUSES,
    INNER_KINDS,
    RUN_KINDS,
    STATUSES,
    Page,
    RunRecord,
    clean_request,
    logs_tail,
    scrub_text,
    to_epoch,
)
from services.library.schema import LibraryError, connect, open_database, transaction

__all__ = [
    "STATUSES",
    "AlreadyInLibrary",
    "Library",
    "LibraryError",
    "Page",
    "RunNotFound",
    "RunRecord",
]

DB_NAME = "library.sqlite3"
AUDIO_DIR = "audio"
INPUTS_DIR = "inputs"  # the library's own copy of each run's input clip
# A composition's working files (a long piece's source and the clips its parts continued).
COMPOSE_DIR = "compose"
TRACKS_DIR = "tracks"  # what was made of a run: its stems and MIDI, one folder per run
MAX_PER_PAGE = 100

# Fields `update` may change; audio fields only change through attach_audio.
_UPDATABLE = frozenset(
    {
        "status",
        "prediction_id",
        "started_at",
        "completed_at",
        "predict_time",
        "seed",
        "error",
        "logs_tail",
        "parent_id",
        "data_removed",
        "engine",
        "checkpoint",
        "device",
        "realtime_factor",
        "kind",
        "compose",
        "cost_usd",
        "payer",
        "reserved_gpu_s",
        "bpm",
        "key",
        "stems",
        "midi",
    }
)


class RunNotFound(LibraryError):
    """No such run for this owner (it may belong to someone else or have been deleted)."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        super().__init__(f"Run {run_id} is not in your library.")


class AlreadyInLibrary(LibraryError):
    """The prediction is already stored for this owner."""

    def __init__(self, prediction_id: str):
        self.prediction_id = prediction_id
        super().__init__(f"Prediction {prediction_id} is already in the library.")


def _check_owner(owner: str | None) -> None:
    # An empty identity would silently become a shared bucket for every broken browser.
    if owner is not None and (not isinstance(owner, str) or not owner.strip()):
        raise ValueError("owner must be None (local install) or a non-empty identity string")


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")


def _check_format(fmt: str) -> str:
    fmt = fmt.lower().lstrip(".")
    if not fmt.isalnum() or len(fmt) > 8:
        raise ValueError(f"audio format must be a short extension such as wav or mp3; got {fmt!r}")
    return fmt


def _owner_clause(owner: str | None) -> tuple[str, list[Any]]:
    return ("", []) if owner is None else (" AND owner = ?", [owner])


def _clean_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Validate `update` arguments and scrub the text ones."""
    unknown = set(changes) - _UPDATABLE
    if unknown:
        allowed = ", ".join(sorted(_UPDATABLE))
        raise ValueError(f"cannot update {', '.join(sorted(unknown))}; allowed: {allowed}")
    clean = dict(changes)
    if "status" in clean:
        _check_status(clean["status"])
    if clean.get("error") is not None:
        clean["error"] = scrub_text(str(clean["error"]))
    if "logs_tail" in clean:
        clean["logs_tail"] = logs_tail(clean["logs_tail"] or "")
    if "data_removed" in clean:
        clean["data_removed"] = int(bool(clean["data_removed"]))
    for name in ("compose", "stems", "midi"):
        if clean.get(name) is not None:
            clean[name] = json.dumps(clean[name], ensure_ascii=False)
    for name in ("started_at", "completed_at"):
        if name in clean:
            try:
                clean[name] = to_epoch(clean[name])
            except ValueError as err:
                raise ValueError(f"{name} must be epoch seconds or an ISO 8601 time") from err
    numbers = (("predict_time", float), ("seed", int), ("cost_usd", float), ("bpm", float))
    for name, kind in (*numbers, ("reserved_gpu_s", float)):
        if clean.get(name) is not None:
            clean[name] = kind(clean[name])
    return clean


class Library:
    """The persistent history of runs under `data_dir`; see the module docstring."""

    def __init__(self, data_dir: Path, *, max_mb: float | None = None):
        if max_mb is not None and not (max_mb > 0 and math.isfinite(max_mb)):
            raise ValueError(f"MUSICGEN_MAX_LIBRARY_MB must be a positive number; got {max_mb!r}")
        self.data_dir = Path(data_dir)
        self.max_mb = max_mb
        self.db_path = self.data_dir / DB_NAME
        self.audio_dir = self.data_dir / AUDIO_DIR
        self.audio_dir.mkdir(parents=True, exist_ok=True)
        open_database(self.db_path)
        remove_stale_parts(self.audio_dir)
        # SQLite folds the log into the database and deletes it whenever its last connection
        # closes; with a connection per call that costs a checkpoint and an fsync on every
        # write (~8 ms). One idle connection kept open for the library's lifetime avoids it.
        self._anchor: sqlite3.Connection | None = connect(self.db_path, check_same_thread=False)
        self._anchor.execute("SELECT 1 FROM runs LIMIT 1").fetchall()
        self._anchor_lock = threading.Lock()  # it also answers `revision`, from any thread

    def close(self) -> None:
        """Release the library's idle connection (calls made afterwards still work)."""
        with self._anchor_lock:
            anchor, self._anchor = self._anchor, None
        if anchor is not None:
            anchor.close()

    @property
    def served_dirs(self) -> list[Path]:
        """The folders whose files a page plays in place: the audio and the kept input clips
        (files named by unguessable run ids); never the data folder itself (the database)."""
        return [self.audio_dir, self.data_dir / INPUTS_DIR, self.data_dir / TRACKS_DIR]

    def revision(self) -> int:
        """A number that differs from the one returned before whenever the library was written
        in between, by this process or another: a check far cheaper than a listing, for pages
        that refresh only on a change. (SQLite's `data_version` on the idle connection, which
        never writes itself; once closed, every call answers as if something changed.)"""
        with self._anchor_lock:
            if self._anchor is None:
                return time.monotonic_ns()
            row = self._anchor.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connections -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = connect(self.db_path)
        try:
            with transaction(conn, write=False):
                yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = connect(self.db_path)
        try:
            with transaction(conn, write=True):
                yield conn
        finally:
            conn.close()

    @staticmethod
    def _row(conn: sqlite3.Connection, run_id: str, owner: str | None) -> RunRecord | None:
        where, args = _owner_clause(owner)
        row = conn.execute(f"SELECT * FROM runs WHERE id = ?{where}", [run_id, *args]).fetchone()
        return RunRecord.from_row(row) if row else None

    # -- writing -----------------------------------------------------------------------------

    def create_pending(
        self,
        owner: str | None,
        request: dict[str, Any],
        *,
        parent_id: str | None = None,
        source: str = "studio",
        **fields: Any,
    ) -> RunRecord:
        """Record a run before its prediction is created; `fields` as for `update`."""
        return self.add_run(
            owner, request, status="pending", parent_id=parent_id, source=source, **fields
        )

    def add_run(
        self,
        owner: str | None,
        request: dict[str, Any],
        *,
        status: str = "pending",
        source: str = "studio",
        created_at: float | str | None = None,
        audio_src: Path | None = None,
        audio_format: str | None = None,
        audio_seconds: float | None = None,
        **fields: Any,
    ) -> RunRecord:
        """Insert one complete row in one transaction (imports, bulk loads).

        `fields` are any of `update`'s fields. With `audio_src` the file is copied in first
        and the run may be `succeeded`; without it, it may not.
        """
        _check_owner(owner)
        _check_status(status)
        clean = _clean_changes(fields)
        if status == "succeeded" and audio_src is None:
            raise ValueError("a run is succeeded only with its audio: pass audio_src")
        request = clean_request(request)
        run_id = uuid.uuid4().hex
        now = time.time()
        row: dict[str, Any] = {
            "id": run_id,
            "owner": owner,
            "request": json.dumps(request, ensure_ascii=False),
            "prompt_key": str(request.get("prompt") or "").casefold(),
            "model_version": request.get("model_version"),
            "status": status,
            "created_at": now if created_at is None else to_epoch(created_at),
            "source": source,
            **clean,
        }
        if status in FINISHED_STATUSES and row.get("completed_at") is None:
            row["completed_at"] = now
        dest = None
        if audio_src is not None:
            fmt = _check_format(audio_format or Path(audio_src).suffix)
            dest = self.audio_dir / f"{run_id}.{fmt}"
            copy_atomic(Path(audio_src), dest)
            row.update(
                audio_path=f"{AUDIO_DIR}/{dest.name}",
                audio_format=fmt,
                audio_seconds=audio_seconds,
                audio_bytes=dest.stat().st_size,
            )
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        try:
            with self._write() as conn:
                conn.execute(f"INSERT INTO runs ({names}) VALUES ({marks})", list(row.values()))
                record = self._row(conn, run_id, None)
        except BaseException as err:
            if dest is not None:
                dest.unlink(missing_ok=True)
            if isinstance(err, sqlite3.IntegrityError) and row.get("prediction_id"):
                raise AlreadyInLibrary(row["prediction_id"]) from err
            raise
        assert record is not None
        return record

    def update(self, run_id: str, **changes: Any) -> RunRecord:
        """Change a run's status and facts as it moves; raises RunNotFound if it is gone.

        `status="succeeded"` is refused unless the audio is already stored (use attach_audio).
        Moving to a finished status fills `completed_at` when it is not known. Times may be
        epoch seconds or the API's ISO 8601 strings; `logs_tail` may be the whole log (only
        its last 4 KB is kept).
        """
        clean = _clean_changes(changes)
        with self._write() as conn:
            current = self._row(conn, run_id, None)
            if current is None:
                raise RunNotFound(run_id)
            if clean.get("status") == "succeeded" and not current.has_audio:
                raise ValueError("a run becomes succeeded only through attach_audio")
            if (
                clean.get("status") in FINISHED_STATUSES
                and current.completed_at is None
                and clean.get("completed_at") is None
            ):
                clean["completed_at"] = time.time()
            if clean:
                sets = ", ".join(f"{name} = ?" for name in clean)
                try:
                    conn.execute(f"UPDATE runs SET {sets} WHERE id = ?", [*clean.values(), run_id])
                except sqlite3.IntegrityError as err:
                    raise AlreadyInLibrary(str(clean.get("prediction_id"))) from err
            record = self._row(conn, run_id, None)
        assert record is not None
        return record

    def attach_audio(
        self,
        run_id: str,
        src: Path,
        *,
        fmt: str,
        seconds: float,
        completed_at: float | None = None,
        version: int | None = None,
        move: bool = False,
    ) -> RunRecord:
        """Copy `src` into the library atomically and mark the run succeeded.

        The caller keeps `src` (delete it yourself); with `move` it is renamed into the library
        instead (a file the caller no longer needs, e.g. a download in a scratch folder on the
        same filesystem: no copy), durably either way. Raises RunNotFound if the run was
        deleted meanwhile; the copy is then removed again. An entry whose audio changes (a
        piece that grows) passes a new `version` each time: the file gets a new name, so no
        player or cache mistakes the new audio for the old; the old file is removed.
        """
        fmt = _check_format(fmt)
        stem = run_id if version is None else f"{run_id}-v{int(version)}"
        dest = self.audio_dir / f"{stem}.{fmt}"
        if self.get(run_id) is None:
            raise RunNotFound(run_id)
        (move_atomic if move else copy_atomic)(Path(src), dest)
        try:
            with self._write() as conn:
                current = self._row(conn, run_id, None)
                if current is None:
                    raise RunNotFound(run_id)
                done = completed_at or current.completed_at or time.time()
                conn.execute(
                    "UPDATE runs SET audio_path = ?, audio_format = ?, audio_seconds = ?,"
                    " audio_bytes = ?, status = 'succeeded', completed_at = ?,"
                    " data_removed = 0 WHERE id = ?",
                    [f"{AUDIO_DIR}/{dest.name}", fmt, seconds, dest.stat().st_size, done, run_id],
                )
                record = self._row(conn, run_id, None)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        assert record is not None
        if current.audio_path and current.audio_path != record.audio_path:
            (self.data_dir / current.audio_path).unlink(missing_ok=True)
        return record

    def keep_input(self, run_id: str, src: Path) -> RunRecord:
        """Keep the run's input clip: a copy under inputs/ (a file already in the library is
        referred to where it is), its data-folder-relative path stored as the request's
        `input_audio`, never a path of the machine it came from. Raises RunNotFound."""
        src = Path(src)
        try:
            rel = src.resolve().relative_to(self.data_dir.resolve()).as_posix()
        except ValueError:
            suffix = src.suffix.lower() if src.suffix[1:].isalnum() else ""
            dest = self.data_dir / INPUTS_DIR / f"{run_id}{suffix}"
            try:
                copy_atomic(src, dest)
            except OSError as err:
                raise LibraryError(f"The input clip could not be kept: {err}") from err
            rel = f"{INPUTS_DIR}/{dest.name}"
        with self._write() as conn:
            current = self._row(conn, run_id, None)
            if current is None:
                raise RunNotFound(run_id)
            request = {**current.request, "input_audio": rel}
            conn.execute(
                "UPDATE runs SET request = ? WHERE id = ?",
                [json.dumps(request, ensure_ascii=False), run_id],
            )
            record = self._row(conn, run_id, None)
        assert record is not None
        return record

    def input_file(self, record: RunRecord) -> Path | None:
        """The run's kept input clip on disk, or None (none, gone, or not inside the library)."""
        rel = record.request.get("input_audio")
        if not isinstance(rel, str) or not rel or Path(rel).is_absolute():
            return None
        path = (self.data_dir / rel).resolve()
        try:
            path.relative_to(self.data_dir.resolve())
        except ValueError:
            return None
        return path if path.is_file() else None

    def set_favourite(self, run_id: str, owner: str | None, value: bool) -> RunRecord | None:
        """Mark or unmark a favourite (kept by the disk cap); None if not this owner's run."""
        _check_owner(owner)
        where, args = _owner_clause(owner)
        with self._write() as conn:
            conn.execute(
                f"UPDATE runs SET favourite = ? WHERE id = ?{where}",
                [int(bool(value)), run_id, *args],
            )
            return self._row(conn, run_id, owner)

    def delete(self, run_id: str, owner: str | None = None) -> bool:
        """Remove the run's row and its audio file; False if not this owner's run."""
        _check_owner(owner)
        with self._write() as conn:
            record = self._row(conn, run_id, owner)
            if record is None:
                return False
            conn.execute("DELETE FROM runs WHERE id = ?", [run_id])
        self._remove_audio(record)
        return True

    def _remove_audio(self, record: RunRecord) -> None:
        kept = self.input_file(record)
        if kept is not None and kept.parent == (self.data_dir / INPUTS_DIR).resolve():
            kept.unlink(missing_ok=True)  # its own copy; a clip that is another run's audio stays
        if record.audio_path:
            path = self.audio_file(record, must_exist=False)
            if path is not None:
                path.unlink(missing_ok=True)
        shutil.rmtree(self.compose_dir(record.id), ignore_errors=True)
        shutil.rmtree(self.track_dir(record.id), ignore_errors=True)

    def compose_dir(self, run_id: str) -> Path:
        """Where a composition keeps its working files; removed with the entry."""
        return self.data_dir / COMPOSE_DIR / run_id

    def track_dir(self, run_id: str) -> Path:
        """Where the stems and MIDI made of a run are kept; removed with the run."""
        return self.data_dir / TRACKS_DIR / run_id

    def track_file(self, rel: str) -> Path | None:
        """A stem or MIDI file named in a record (data-folder relative), if it is on disk
        inside the tracks folder; None otherwise."""
        path = (self.data_dir / rel).resolve()
        try:
            path.relative_to((self.data_dir / TRACKS_DIR).resolve())
        except ValueError:
            return None
        return path if path.is_file() else None

    # -- reading -----------------------------------------------------------------------------

    def get(self, run_id: str, owner: str | None = None) -> RunRecord | None:
        """The run, or None if it does not exist or belongs to another owner."""
        _check_owner(owner)
        with self._read() as conn:
            return self._row(conn, run_id, owner)

    def audio_file(self, record: RunRecord, *, must_exist: bool = True) -> Path | None:
        """Where the run's audio is on disk, or None (no audio, file gone, or a bad path)."""
        if not record.audio_path:
            return None
        path = (self.data_dir / record.audio_path).resolve()
        # Rows are ours, but never hand out a path outside the audio folder.
        if path.parent != self.audio_dir.resolve():
            return None
        if must_exist and not path.is_file():
            return None
        return path

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
        _check_owner(owner)
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
            _check_status(status)
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
        with self._read() as conn:
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
        _check_owner(owner)
        where, args = _owner_clause(owner)
        with self._read() as conn:
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
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT * FROM runs WHERE status IN ({marks}) AND kind IN ({kind_marks})"
                " ORDER BY created_at, id",
                [*sorted(IN_FLIGHT_STATUSES), *kinds],
            ).fetchall()
        return [RunRecord.from_row(r) for r in rows]

    def children(self, parent_id: str, owner: str | None = None) -> builtins.list[RunRecord]:
        """The runs filed inside an entry (its parts, its variations), oldest first."""
        where, args = _owner_clause(owner)
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT * FROM runs WHERE parent_id = ?{where} ORDER BY created_at, id",
                [parent_id, *args],
            ).fetchall()
        return [RunRecord.from_row(r) for r in rows]

    def replicate_runs_since(
        self, since: float, owner: str | None = None
    ) -> builtins.list[RunRecord]:
        """Replicate runs (not compositions) created at or after `since`, of `owner` (everyone's
        for None), oldest first: what an orphan found in the account may belong to."""
        where, args = _owner_clause(owner)
        kinds = ", ".join("?" for _ in RUN_KINDS)
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT * FROM runs WHERE engine = 'replicate' AND created_at >= ?"
                f" AND kind IN ({kinds}){where} ORDER BY created_at, id",
                [since, *RUN_KINDS, *args],
            ).fetchall()
        return [RunRecord.from_row(r) for r in rows]

    def predict_rates(self, model_version: str, *, limit: int = 50) -> builtins.list[float]:
        """Seconds of GPU work per second of audio of the latest succeeded Replicate runs of
        `model_version` (every owner's: it measures the hardware, not the visitor)."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT predict_time / audio_seconds FROM runs WHERE engine = 'replicate'"
                " AND status = 'succeeded' AND model_version = ? AND predict_time > 0"
                " AND audio_seconds > 0 ORDER BY created_at DESC LIMIT ?",
                [model_version, int(limit)],
            ).fetchall()
        return [float(r[0]) for r in rows]

    def spent(self, payer: str | None, *, since: float, in_flight_since: float) -> accounting.Spent:
        """GPU seconds (settled, or reserved while in flight) of `payer`'s Replicate runs
        created since `since`, and their runs in flight (everyone's for None); see
        services.library.accounting."""
        with self._read() as conn:
            return accounting.spent(conn, payer, since=since, in_flight_since=in_flight_since)

    def spending_times(
        self, payer: str | None, *, since: float, in_flight_since: float
    ) -> builtins.list[tuple[float, float, bool]]:
        """(created_at, GPU seconds counted, in flight) of each of `payer`'s counted runs."""
        with self._read() as conn:
            return accounting.spending_times(
                conn, payer, since=since, in_flight_since=in_flight_since
            )

    def find_by_prediction(self, prediction_id: str, owner: str | None = None) -> RunRecord | None:
        """The run made by this prediction (for this owner when one is given)."""
        _check_owner(owner)
        where, args = _owner_clause(owner)
        with self._read() as conn:
            row = conn.execute(
                f"SELECT * FROM runs WHERE prediction_id = ?{where} ORDER BY rowid LIMIT 1",
                [prediction_id, *args],
            ).fetchone()
        return RunRecord.from_row(row) if row else None

    def known_predictions(self, owner: str | None = None) -> set[str]:
        """Every prediction id already in this owner's library (all owners for None)."""
        _check_owner(owner)
        where, args = _owner_clause(owner)
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT prediction_id FROM runs WHERE prediction_id IS NOT NULL{where}", args
            ).fetchall()
        return {r[0] for r in rows}

    def total_bytes(self, owner: str | None = None) -> int:
        """Bytes of stored audio (this owner's, or everyone's for None)."""
        _check_owner(owner)
        where, args = _owner_clause(owner)
        with self._read() as conn:
            row = conn.execute(
                f"SELECT COALESCE(SUM(audio_bytes), 0) FROM runs WHERE 1 = 1{where}", args
            ).fetchone()
        return int(row[0])

    # -- export and housekeeping -------------------------------------------------------------

    def export(self, run_id: str, owner: str | None, dest_dir: Path) -> Path:
        """Write a zip with the run's audio and a JSON sidecar into `dest_dir`.

        Raises RunNotFound if the run is not this owner's. A run without audio exports the
        sidecar alone.
        """
        record = self.get(run_id, owner)
        if record is None:
            raise RunNotFound(run_id)
        return write_export(record, self.audio_file(record), Path(dest_dir))

    def room_left(self, owner: str | None) -> int | None:
        """Bytes `owner` (everyone for None) may still store once the size cap has removed
        all it may of theirs; None without a cap. At or below 0 nothing new fits."""
        if self.max_mb is None:
            return None
        with self._read() as conn:
            kept = accounting.kept_bytes(conn, owner)
        return int(self.max_mb * 1024 * 1024) - kept

    def enforce_cap(
        self, owner: str | None = None, *, keep: Iterable[str] = ()
    ) -> builtins.list[RunRecord]:
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
        with self._write() as conn:
            total = accounting.stored_bytes(conn, owner)
            if total <= cap:
                return []
            for row in accounting.evictable(conn, owner, set(keep)):
                if total <= cap:
                    break
                record = RunRecord.from_row(row)
                conn.execute("DELETE FROM runs WHERE id = ?", [record.id])
                total -= record.audio_bytes or 0
                removed.append(record)
        for record in removed:
            self._remove_audio(record)
        return removed
