"""The library's one front, Library, which every caller uses: it joins parts that each do one job.

`rows` (one run's row and its files: create, update, attach audio, favourite, delete, get),
`queries` (the history's pages, search, filters, counts, runs in flight, an entry's runs),
`accounting` (spending per payer, stored audio, the size cap), over `schema.Database` (the
SQLite file) and `layout.Layout` (where a run's files live).

On disk: `<data_dir>/library.sqlite3` (WAL mode, schema version in `PRAGMA user_version`, see
`schema`) and `<data_dir>/audio/<run id>.<format>`. Every file is written atomically.

Owners: `owner=None` means a local single-user install: every query sees every run. A shared
deployment always passes the visitor's identity string; then every read, play (`get` +
`audio_file`), favourite, export and delete is restricted to rows with exactly that owner, so a
visitor can never touch another's run, even by guessing its id (it simply is not found).
`in_flight` is server-side housekeeping and spans every owner; `enforce_cap` makes room in one
owner's share (every owner's on a local install). Spending is counted per payer (a signed-in
account or a client address, see services.library.accounting), not per owner.

Lifecycle: see services.library.rows.

Secrets: the library never stores an API token. Request keys containing "token" are dropped and
token-like text (`r8_...`, `Bearer ...`) in requests, errors and logs is replaced by [redacted].

Concurrency: every call opens its own short-lived connection (busy timeout 15 s) and writes in
`BEGIN IMMEDIATE` transactions, so one instance can be shared by threads and asyncio tasks, and
several processes can use the same data folder. Calls are short and synchronous (well under a
millisecond for a write, a few ms for a page); `close()` releases the one idle connection an
instance keeps open.
"""

from __future__ import annotations

from pathlib import Path

from services.library.accounting import Accounting, check_cap
from services.library.export import write_export
from services.library.layout import Layout
from services.library.queries import Queries
from services.library.rows import Rows
from services.library.schema import Database

DB_NAME = "library.sqlite3"


class Library:
    """The persistent history of runs under `data_dir`; see the module docstring."""

    def __init__(self, data_dir: Path, *, max_mb: float | None = None):
        check_cap(max_mb)
        self.data_dir = Path(data_dir)
        self.max_mb = max_mb
        self.db_path = self.data_dir / DB_NAME
        self.layout = Layout(self.data_dir)
        self._db = Database(self.db_path)
        self.rows = Rows(self._db, self.layout)
        self.queries = Queries(self._db)
        self.accounting = Accounting(self._db, self.layout, max_mb)
        # The front: each call is its part's own method (signature, types and docstring there).
        self.revision = self._db.revision
        self.close = self._db.close
        self.create_pending = self.rows.create_pending
        self.add_run = self.rows.add_run
        self.update = self.rows.update
        self.attach_audio = self.rows.attach_audio
        self.keep_input = self.rows.keep_input
        self.set_favourite = self.rows.set_favourite
        self.delete = self.rows.delete
        self.get = self.rows.get
        self.require = self.rows.require
        self.audio_file = self.layout.audio_file
        self.input_file = self.layout.input_file
        self.compose_dir = self.layout.compose_dir
        self.track_dir = self.layout.track_dir
        self.track_file = self.layout.track_file
        self.list = self.queries.list
        self.counts = self.queries.counts
        self.in_flight = self.queries.in_flight
        self.children = self.queries.children
        self.replicate_runs_since = self.queries.replicate_runs_since
        self.predict_rates = self.queries.predict_rates
        self.find_by_prediction = self.queries.find_by_prediction
        self.known_predictions = self.queries.known_predictions
        self.spent = self.accounting.spent
        self.spending_times = self.accounting.spending_times
        self.total_bytes = self.accounting.total_bytes
        self.room_left = self.accounting.room_left
        self.enforce_cap = self.accounting.enforce_cap

    @property
    def served_dirs(self) -> list[Path]:
        """The folders whose files a page plays in place (see Layout.served_dirs)."""
        return self.layout.served_dirs

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def export(self, run_id: str, owner: str | None, dest_dir: Path) -> Path:
        """Write a zip with the run's audio and a JSON sidecar into `dest_dir`.

        Raises RunNotFound if the run is not this owner's. A run without audio exports the
        sidecar alone.
        """
        record = self.require(run_id, owner)
        return write_export(record, self.audio_file(record), Path(dest_dir))
