"""What a folder holds, byte for byte: for the tests that look for a secret in every file the
studio wrote (a token must never be stored, not even inside an export's zip)."""

from __future__ import annotations

import zipfile
from pathlib import Path


def folder_contents(folder: Path) -> dict[Path, bytes]:
    """Every file below `folder` with its bytes; a zip's are followed by its members' bytes."""
    contents: dict[Path, bytes] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        blob = path.read_bytes()
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                blob += b"".join(zf.read(name) for name in zf.namelist())
        contents[path] = blob
    return contents


def files_holding(folder: Path, secret: str | bytes) -> list[Path]:
    """The files below `folder` (zip members included) in which `secret` is written."""
    needle = secret.encode() if isinstance(secret, str) else secret
    return [path for path, blob in folder_contents(folder).items() if needle in blob]
