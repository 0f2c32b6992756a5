"""Handing library files to Gradio without exposing the data folder.

Gradio copies every file a handler returns into its own cache (under a random directory) and
serves it from there. It only agrees to copy files from the working directory, the system's
temporary directory or `allowed_paths`; and `allowed_paths` would also serve that whole
folder to anyone who asks for a path in it. So the data folder is never made an allowed path:
a library file outside the working and temporary directories is first copied to a private
staging folder inside the temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

STAGED_MAX_AGE_S = 3600.0


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


class FileServer:
    """Makes library files returnable by handlers; owns one staging folder."""

    def __init__(self) -> None:
        self._temp = Path(tempfile.gettempdir()).resolve()
        self._staging = self._temp / f"musicgen-studio-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def _direct(self, path: Path) -> bool:
        return _inside(path, Path.cwd().resolve()) or _inside(path, self._temp)

    def servable(self, path: Path | str | None) -> str | None:
        """A path Gradio will accept for `path` (the file itself, or a staged copy)."""
        if path is None:
            return None
        source = Path(path).resolve()
        if not source.is_file():
            return None
        return str(source) if self._direct(source) else str(self._stage(source))

    def staging_dir(self) -> Path:
        """A private folder for files made for download (exports)."""
        self._staging.mkdir(parents=True, exist_ok=True)
        self._prune()
        folder = self._staging / uuid.uuid4().hex
        folder.mkdir()
        return folder

    def _stage(self, source: Path) -> Path:
        dest = self.staging_dir() / source.name
        shutil.copyfile(source, dest)
        return dest

    def _prune(self) -> None:
        """Remove staged copies older than an hour (Gradio has its own copy by then)."""
        cutoff = time.time() - STAGED_MAX_AGE_S
        for entry in self._staging.iterdir():
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)

    def cleanup(self) -> None:
        shutil.rmtree(self._staging, ignore_errors=True)
