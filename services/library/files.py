"""Atomic file writes for the library: a temporary file in the same folder, then a rename.

A reader (or a process that crashed half-way) sees either the old file or the whole new one,
never a partial file under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

PART_SUFFIX = ".part"


def _fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (not available on every platform)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(dest: Path, fill: Callable[[BinaryIO], None]) -> Path:
    """Write `dest` by calling `fill` on a temporary file beside it, then renaming it in place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=PART_SUFFIX, dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)
    return dest


def copy_atomic(src: Path, dest: Path) -> Path:
    """Copy `src` to `dest` atomically."""

    def fill(out: BinaryIO) -> None:
        with open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1024 * 1024)

    return write_atomic(dest, fill)


def move_atomic(src: Path, dest: Path) -> Path:
    """Move `src` to `dest` by a rename when both are on one filesystem (else an atomic copy,
    then `src` is removed); the file and the rename are made durable either way."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(src, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(src, 0o644)
        os.replace(src, dest)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        copy_atomic(src, dest)
        src.unlink(missing_ok=True)
        return dest
    _fsync_dir(dest.parent)
    return dest


def remove_stale_parts(folder: Path, *, older_than: float = 3600.0) -> int:
    """Delete temporary files a crashed writer left behind; returns how many.

    Only old ones: a younger one may belong to another process writing right now.
    """
    if not folder.is_dir():
        return 0
    cutoff = time.time() - older_than
    removed = 0
    for part in folder.glob(f".*{PART_SUFFIX}"):
        with contextlib.suppress(OSError):
            if part.stat().st_mtime < cutoff:
                part.unlink()
                removed += 1
    return removed
