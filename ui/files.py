"""Handing library files to Gradio without copying them.

Gradio serves a file a handler returns from its own cache (a copy under a random directory)
unless it lies in a static path, which it serves in place. The library's audio and input
folders are made static paths (`serve_library`): files there are played and downloaded where
they are, never copied. Those folders hold only audio named by unguessable run ids; the data
folder itself (the database) is never served. Files made for download (exports) go to a
private staging folder inside the temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import gradio as gr

STAGED_MAX_AGE_S = 3600.0


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def serve_library(folders: Sequence[Path]) -> FileServer:
    """Have Gradio serve `folders` in place (static paths, for every app of this process) and
    return the FileServer that hands their files to handlers."""
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    gr.set_static_paths(list(folders))
    return FileServer(served=folders)


class FileServer:
    """Makes library files returnable by handlers; owns one staging folder.

    `served`: folders Gradio serves in place (see `serve_library`); their files are returned
    as they are.
    """

    def __init__(self, served: Sequence[Path] = ()) -> None:
        self._temp = Path(tempfile.gettempdir()).resolve()
        self._staging = self._temp / f"musicgen-studio-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._served = [Path(folder).resolve() for folder in served]

    def _direct(self, path: Path) -> bool:
        return any(_inside(path, folder) for folder in self._served) or (
            _inside(path, Path.cwd().resolve()) or _inside(path, self._temp)
        )

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
