"""A run's row and the files it holds: create it, change it as the run moves, read it, delete it.

Lifecycle: `create_pending` before the prediction exists, `update` as it moves, `attach_audio`
once the output is downloaded; only `attach_audio` (or `add_run` with audio) makes a run
`succeeded`. A run whose output is gone becomes `lost`, with the reason in `error`. Every write
is one `BEGIN IMMEDIATE` transaction; a file is copied in atomically before its row names it.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from services.library.files import copy_atomic, move_atomic
from services.library.layout import AUDIO_DIR, INPUTS_DIR, Layout
from services.library.records import (
    FINISHED_STATUSES,
    RunRecord,
    check_owner,
    check_status,
    clean_request,
    logs_tail,
    owner_clause,
    scrub_text,
    to_epoch,
)
from services.library.schema import Database, LibraryError

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


def _check_format(fmt: str) -> str:
    fmt = fmt.lower().lstrip(".")
    if not fmt.isalnum() or len(fmt) > 8:
        raise ValueError(f"audio format must be a short extension such as wav or mp3; got {fmt!r}")
    return fmt


def _clean_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Validate `update` arguments and scrub the text ones."""
    unknown = set(changes) - _UPDATABLE
    if unknown:
        allowed = ", ".join(sorted(_UPDATABLE))
        raise ValueError(f"cannot update {', '.join(sorted(unknown))}; allowed: {allowed}")
    clean = dict(changes)
    if "status" in clean:
        check_status(clean["status"])
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


def fetch_row(conn: sqlite3.Connection, run_id: str, owner: str | None) -> RunRecord | None:
    """The run `run_id` of `owner` (any owner's for None) read on `conn`, or None."""
    where, args = owner_clause(owner)
    row = conn.execute(f"SELECT * FROM runs WHERE id = ?{where}", [run_id, *args]).fetchone()
    return RunRecord.from_row(row) if row else None


class Rows:
    """One run's row at a time, and its files in `layout`."""

    def __init__(self, db: Database, layout: Layout):
        self._db = db
        self._layout = layout

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
        check_owner(owner)
        check_status(status)
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
            dest = self._layout.audio_dir / f"{run_id}.{fmt}"
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
            with self._db.write() as conn:
                conn.execute(f"INSERT INTO runs ({names}) VALUES ({marks})", list(row.values()))
                record = fetch_row(conn, run_id, None)
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
        with self._db.write() as conn:
            current = fetch_row(conn, run_id, None)
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
            record = fetch_row(conn, run_id, None)
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
        dest = self._layout.audio_dir / f"{stem}.{fmt}"
        self.require(run_id)
        (move_atomic if move else copy_atomic)(Path(src), dest)
        try:
            with self._db.write() as conn:
                current = fetch_row(conn, run_id, None)
                if current is None:
                    raise RunNotFound(run_id)
                done = completed_at or current.completed_at or time.time()
                conn.execute(
                    "UPDATE runs SET audio_path = ?, audio_format = ?, audio_seconds = ?,"
                    " audio_bytes = ?, status = 'succeeded', completed_at = ?,"
                    " data_removed = 0 WHERE id = ?",
                    [f"{AUDIO_DIR}/{dest.name}", fmt, seconds, dest.stat().st_size, done, run_id],
                )
                record = fetch_row(conn, run_id, None)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        assert record is not None
        if current.audio_path and current.audio_path != record.audio_path:
            (self._layout.data_dir / current.audio_path).unlink(missing_ok=True)
        return record

    def keep_input(self, run_id: str, src: Path) -> RunRecord:
        """Keep the run's input clip: a copy under inputs/ (a file already in the library is
        referred to where it is), its data-folder-relative path stored as the request's
        `input_audio`, never a path of the machine it came from. Raises RunNotFound."""
        src = Path(src)
        try:
            rel = src.resolve().relative_to(self._layout.data_dir.resolve()).as_posix()
        except ValueError:
            suffix = src.suffix.lower() if src.suffix[1:].isalnum() else ""
            dest = self._layout.inputs_dir / f"{run_id}{suffix}"
            try:
                copy_atomic(src, dest)
            except OSError as err:
                raise LibraryError(f"The input clip could not be kept: {err}") from err
            rel = f"{INPUTS_DIR}/{dest.name}"
        with self._db.write() as conn:
            current = fetch_row(conn, run_id, None)
            if current is None:
                raise RunNotFound(run_id)
            request = {**current.request, "input_audio": rel}
            conn.execute(
                "UPDATE runs SET request = ? WHERE id = ?",
                [json.dumps(request, ensure_ascii=False), run_id],
            )
            record = fetch_row(conn, run_id, None)
        assert record is not None
        return record

    def set_favourite(self, run_id: str, owner: str | None, value: bool) -> RunRecord | None:
        """Mark or unmark a favourite (kept by the disk cap); None if not this owner's run."""
        check_owner(owner)
        where, args = owner_clause(owner)
        with self._db.write() as conn:
            conn.execute(
                f"UPDATE runs SET favourite = ? WHERE id = ?{where}",
                [int(bool(value)), run_id, *args],
            )
            return fetch_row(conn, run_id, owner)

    def delete(self, run_id: str, owner: str | None = None) -> bool:
        """Remove the run's row and its audio file; False if not this owner's run."""
        check_owner(owner)
        with self._db.write() as conn:
            record = fetch_row(conn, run_id, owner)
            if record is None:
                return False
            conn.execute("DELETE FROM runs WHERE id = ?", [run_id])
        self._layout.remove_files(record)
        return True

    def get(self, run_id: str, owner: str | None = None) -> RunRecord | None:
        """The run, or None if it does not exist or belongs to another owner."""
        check_owner(owner)
        with self._db.read() as conn:
            return fetch_row(conn, run_id, owner)

    def require(self, run_id: str, owner: str | None = None) -> RunRecord:
        """The run; raises RunNotFound if it does not exist or belongs to another owner."""
        record = self.get(run_id, owner)
        if record is None:
            raise RunNotFound(run_id)
        return record
