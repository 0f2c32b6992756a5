"""The library's database file: opening connections, the schema and its migrations.

The schema version lives in `PRAGMA user_version`. `MIGRATIONS[n]` turns a version-n database
into version n+1; opening runs every missing step inside one write transaction, so two
processes opening the same old file at once migrate it exactly once. `Database` is the handle
the library's parts share: a short-lived connection per read or write.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from services.errors import StudioError

SCHEMA_VERSION = 6
# Seconds a connection waits for another writer (thread or process) before giving up.
BUSY_TIMEOUT_SECONDS = 15.0


class LibraryError(StudioError):
    """The library's database could not be opened, read or written."""


def _v0_to_v1(conn: sqlite3.Connection) -> None:
    """Create the runs table and its indexes."""
    conn.execute(
        """
        CREATE TABLE runs (
            id             TEXT PRIMARY KEY,
            owner          TEXT,                      -- NULL: a local single-user install
            request        TEXT NOT NULL,             -- GenerationRequest.to_dict() as JSON
            prompt_key     TEXT NOT NULL DEFAULT '',  -- casefolded prompt, for search
            model_version  TEXT,                      -- copied out of request, for the filter
            prediction_id  TEXT,
            status         TEXT NOT NULL,
            created_at     REAL NOT NULL,             -- epoch seconds, UTC
            started_at     REAL,
            completed_at   REAL,
            predict_time   REAL,
            seed           INTEGER,
            error          TEXT,
            logs_tail      TEXT NOT NULL DEFAULT '',
            audio_path     TEXT,                      -- relative to the data folder
            audio_format   TEXT,
            audio_seconds  REAL,
            audio_bytes    INTEGER,
            parent_id      TEXT,
            favourite      INTEGER NOT NULL DEFAULT 0,
            source         TEXT NOT NULL DEFAULT 'studio',
            data_removed   INTEGER NOT NULL DEFAULT 0
        )
        """
    )
    # Newest-first pages, per owner and for everyone; id breaks ties so pages are stable.
    # The filter columns ride along so that search, filters, counts and skipping to a deep
    # page read only the index, never the wide rows.
    conn.execute(
        "CREATE INDEX runs_owner_created ON runs"
        " (owner, created_at, id, status, model_version, favourite, prompt_key)"
    )
    conn.execute(
        "CREATE INDEX runs_created ON runs"
        " (created_at, id, status, model_version, favourite, prompt_key)"
    )
    conn.execute("CREATE INDEX runs_status ON runs (status)")
    # One row per prediction per owner; IFNULL so local rows (owner NULL) are unique too.
    conn.execute(
        "CREATE UNIQUE INDEX runs_owner_prediction ON runs (IFNULL(owner, ''), prediction_id)"
        " WHERE prediction_id IS NOT NULL"
    )
    conn.execute("CREATE INDEX runs_prediction ON runs (prediction_id)")


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    """Record which engine made each run, with what and where, and how fast."""
    conn.execute("ALTER TABLE runs ADD COLUMN engine TEXT NOT NULL DEFAULT 'replicate'")
    conn.execute("ALTER TABLE runs ADD COLUMN checkpoint TEXT")  # model or local checkpoint
    conn.execute("ALTER TABLE runs ADD COLUMN device TEXT")  # cuda, mps, cpu; NULL on Replicate
    # Seconds of model work per second of audio (below 1: faster than real time).
    conn.execute("ALTER TABLE runs ADD COLUMN realtime_factor REAL")


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    """Compositions: a long piece made of parts, a group of variations, a loop."""
    # take (one run), extend (a chain of continuation parts), variations (a group of takes),
    # loop (a take cut to whole bars); parts and takes point at their entry through parent_id.
    conn.execute("ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'take'")
    # JSON: the composition's own facts (parts and their time spans, target length, BPM, ...).
    conn.execute("ALTER TABLE runs ADD COLUMN compose TEXT")
    conn.execute("CREATE INDEX runs_parent ON runs (parent_id)")


def _v3_to_v4(conn: sqlite3.Connection) -> None:
    """What each run cost: its GPU seconds (predict_time, already kept) at the price then."""
    # Dollars; 0 for this machine's runs, NULL while unknown (in flight, or never measured).
    conn.execute("ALTER TABLE runs ADD COLUMN cost_usd REAL")
    # The daily spending guard sums one owner's recent Replicate runs.
    conn.execute("CREATE INDEX runs_owner_engine_created ON runs (owner, engine, created_at)")


def _v4_to_v5(conn: sqlite3.Connection) -> None:
    """Who pays for each run, and the GPU seconds a run in flight holds until it settles."""
    # The allowance a run counts against: a signed-in account or a client address on a shared
    # deployment (the history owner is the browser, or the account); NULL on a local install.
    conn.execute("ALTER TABLE runs ADD COLUMN payer TEXT")
    # Seconds of GPU time reserved when the run started (its estimate); while it is in flight
    # the spending caps count this, once it ended its measured predict_time instead.
    conn.execute("ALTER TABLE runs ADD COLUMN reserved_gpu_s REAL")
    conn.execute("UPDATE runs SET payer = owner")  # until now the owner was the one who paid
    conn.execute("CREATE INDEX runs_payer_created ON runs (payer, created_at)")


def _v5_to_v6(conn: sqlite3.Connection) -> None:
    """From take to track: the measured tempo and key, the stems and the MIDI made of a run."""
    conn.execute("ALTER TABLE runs ADD COLUMN bpm REAL")  # measured, not the one asked for
    conn.execute("ALTER TABLE runs ADD COLUMN key TEXT")  # e.g. "A minor"
    # JSON: {"model": name, "files": {stem name: data-folder-relative path}}.
    conn.execute("ALTER TABLE runs ADD COLUMN stems TEXT")
    # JSON: {source ("mix" or a stem name): {"path": relative path, "notes": count}}.
    conn.execute("ALTER TABLE runs ADD COLUMN midi TEXT")


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    0: _v0_to_v1,
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
    5: _v5_to_v6,
}


def connect(db_path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A fresh autocommit connection; callers open transactions themselves."""
    conn = sqlite3.connect(
        db_path,
        timeout=BUSY_TIMEOUT_SECONDS,
        isolation_level=None,
        check_same_thread=check_same_thread,
    )
    conn.row_factory = sqlite3.Row
    # In WAL mode NORMAL survives any process crash (SIGKILL included); only an OS crash
    # can lose the last commits, never corrupt the file.
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection, *, write: bool) -> Iterator[sqlite3.Connection]:
    """One transaction; a write one takes the lock up front so it never fails half-way."""
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def open_database(db_path: Path) -> None:
    """Create or migrate the database at `db_path` to SCHEMA_VERSION, in WAL mode."""
    try:
        conn = connect(db_path)
        try:
            _migrate(conn, db_path)
        finally:
            conn.close()
    except sqlite3.OperationalError as err:
        raise LibraryError(
            f"The library database {db_path} cannot be opened ({err}). "
            "Check that MUSICGEN_DATA_DIR points at a writable folder."
        ) from err
    except sqlite3.DatabaseError as err:
        raise LibraryError(
            f"The library database {db_path} is unreadable ({err}). "
            "Move it aside or point MUSICGEN_DATA_DIR at another folder."
        ) from err


def _migrate(conn: sqlite3.Connection, db_path: Path) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise LibraryError(
            f"The library database {db_path} cannot use WAL mode (got {mode!r}); "
            "put MUSICGEN_DATA_DIR on a local disk."
        )
    with transaction(conn, write=True):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LibraryError(
                f"The library database {db_path} was written by a newer MusicGen Studio "
                f"(schema {version}; this version knows up to {SCHEMA_VERSION}). "
                "Upgrade the app, or point MUSICGEN_DATA_DIR at another folder."
            )
        for step in range(version, SCHEMA_VERSION):
            MIGRATIONS[step](conn)
        if version != SCHEMA_VERSION:
            # PRAGMA takes no parameters; the value is our own integer constant.
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")


class Database:
    """The open library database at `db_path`: one short transaction per `read` or `write`."""

    def __init__(self, db_path: Path):
        self.db_path = db_path
        open_database(db_path)
        # SQLite folds the log into the database and deletes it whenever its last connection
        # closes; with a connection per call that costs a checkpoint and an fsync on every
        # write (~8 ms). One idle connection kept open for the library's lifetime avoids it.
        self._anchor: sqlite3.Connection | None = connect(db_path, check_same_thread=False)
        self._anchor.execute("SELECT 1 FROM runs LIMIT 1").fetchall()
        self._anchor_lock = threading.Lock()  # it also answers `revision`, from any thread

    def close(self) -> None:
        """Release the idle connection (calls made afterwards still work)."""
        with self._anchor_lock:
            anchor, self._anchor = self._anchor, None
        if anchor is not None:
            anchor.close()

    def revision(self) -> int:
        """A number that differs from the one returned before whenever the database was
        written in between, by this process or another (SQLite's `data_version` on the idle
        connection, which never writes itself; once closed, every call answers as if
        something changed)."""
        with self._anchor_lock:
            if self._anchor is None:
                return time.monotonic_ns()
            row = self._anchor.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A connection inside one read transaction."""
        with self._open(write=False) as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A connection inside one write transaction (the lock taken up front)."""
        with self._open(write=True) as conn:
            yield conn

    @contextmanager
    def _open(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        conn = connect(self.db_path)
        try:
            with transaction(conn, write=write):
                yield conn
        finally:
            conn.close()
