"""Any result in any format: wav, mp3 or flac, whatever the run produced.

Conversions are made on demand with pydub and kept in `<data_dir>/cache/`, keyed on the
entry's audio file (its size and modification time), so a changed file is converted again and
the second download of the same file is instant. Downloads get a name that says what they are:
a few words of the prompt, bpm and bars for a loop, the measured tempo and key, the seed and the
date, e.g. `lofi-piano-rain-97bpm-a-minor-seed1234-2026-11-30.flac`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import unicodedata
import uuid
from datetime import UTC, datetime
from pathlib import Path

from services.compose import audio_ops
from services.errors import AudioError
from services.library import Library, RunRecord
from services.library.export import tempo_key_tag

FORMATS = ("wav", "mp3", "flac")
CACHE_DIR = "cache"
SLUG_WORDS = 4
SLUG_MAX_CHARS = 40
_WORD = re.compile(r"[a-z0-9]+")
KIND_NAMES = {"extend": "piece", "variations": "variations", "part": "part", "arrange": "song"}
_BPM_SUFFIX = re.compile(r"\s*,?\s*\b\d+(?:\.\d+)?\s*bpm\b", re.IGNORECASE)


def slug(text: str, words: int = SLUG_WORDS) -> str:
    """The first few words of `text` in lowercase ASCII joined by hyphens ("" for none)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    picked = _WORD.findall(ascii_text.lower())[:words]
    return "-".join(picked)[:SLUG_MAX_CHARS].strip("-")


def download_name(record: RunRecord, fmt: str) -> str:
    """What the downloaded file is called: prompt words, loop tempo and bars, measured tempo
    and key, seed, date."""
    compose = record.compose or {}
    prompt = record.prompt
    parts = []
    if record.kind == "loop":
        prompt = _BPM_SUFFIX.sub("", prompt)  # the tempo is said once, as bpm
    parts.append(slug(prompt) or "musicgen")
    if record.kind == "loop" and compose.get("bpm") is not None:
        parts.append(f"loop-{float(compose['bpm']):g}bpm-{compose.get('bars')}bars")
        parts.append(tempo_key_tag(None, record.key))  # the tempo is the loop's own
    else:
        if record.kind not in ("take", "variation", "loop-source"):
            # What it is, in a musician's word (the library's kind names are internal).
            parts.append(KIND_NAMES.get(record.kind, slug(record.kind)))
        parts.append(tempo_key_tag(record.bpm, record.key))
    if record.seed is not None:
        parts.append(f"seed{record.seed}")
    parts.append(datetime.fromtimestamp(record.created_at, UTC).strftime("%Y-%m-%d"))
    return f"{'-'.join(p for p in parts if p)}.{fmt}"


def check_format(fmt: str) -> str:
    fmt = (fmt or "").strip().lower().lstrip(".")
    if fmt not in FORMATS:
        raise AudioError(f"Downloads are {', '.join(FORMATS)}; {fmt or 'nothing'} was asked for.")
    return fmt


class FormatCache:
    """Converted copies of library audio under `<data_dir>/cache/`; shared by every visitor."""

    def __init__(self, library: Library):
        self._library = library
        self.folder = library.data_dir / CACHE_DIR

    def _key(self, record: RunRecord, source: Path, fmt: str) -> Path:
        stat = source.stat()
        return self.folder / f"{record.id}-{stat.st_size}-{stat.st_mtime_ns}.{fmt}"

    def converted(self, record: RunRecord, fmt: str) -> Path:
        """The entry's audio as `fmt`: the library file itself when it already is, else a
        cached conversion (made now if the cache has none for this very file)."""
        fmt = check_format(fmt)
        source = self._library.audio_file(record)
        if source is None:
            raise AudioError("This entry has no audio to download.")
        if source.suffix.lstrip(".").lower() == fmt:
            return source
        target = self._key(record, source, fmt)
        if target.is_file():
            return target
        self.folder.mkdir(parents=True, exist_ok=True)
        # A unique part name: two visitors may ask for the same conversion at once.
        part = self.folder / f".{target.stem}.{uuid.uuid4().hex}.{fmt}"
        try:
            audio_ops.export(audio_ops.load(source), part, fmt)
            part.replace(target)
        except Exception as err:
            part.unlink(missing_ok=True)
            raise AudioError(f"Could not convert the audio to {fmt}: {err}") from err
        for old in self.folder.glob(f"{record.id}-*.{fmt}"):
            if old != target:  # made from an earlier version of this entry's audio
                old.unlink(missing_ok=True)
        self.prune()
        return target

    def deliver(self, record: RunRecord, fmt: str, folder: Path) -> Path:
        """The entry's audio as `fmt`, in `folder` under its download name (a hard link to the
        cached file where the file system allows, else a copy)."""
        source = self.converted(record, fmt)
        dest = Path(folder) / download_name(record, check_format(fmt))
        dest.unlink(missing_ok=True)
        try:
            os.link(source, dest)
        except OSError:
            shutil.copyfile(source, dest)
        return dest

    def prune(self) -> list[Path]:
        """Remove the conversions of entries no longer in the library (deleted, or removed to
        stay under the disk cap); run whenever a new conversion is added."""
        removed: list[Path] = []
        for path in self.folder.glob("*-*-*.*"):
            if self._library.get(path.name.split("-", 1)[0]) is None:
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
        return removed
