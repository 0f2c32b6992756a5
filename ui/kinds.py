"""What a result is, in a musician's words: its kind's badge and how it reads in a picker.

The library's kinds ("take", "extend", "loop-source", ...) are internal names: the page shows
only the words below. Tempo and key are read defensively (`bpm`, `key` on a record, or in its
`compose`), since a record made before they were measured has neither.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from services.compose.extend import parts_summary
from services.library import RunRecord

# The word for each kind; runs filed inside a composition read as what they are to it.
KIND_WORDS: Mapping[str, str] = {
    "take": "Take",
    "part": "Part of a piece",
    "variation": "Take of variations",
    "loop-source": "Take of a loop",
    "extend": "Piece",
    "variations": "Variations",
    "loop": "Loop",
    "song": "Song",
    "arrange": "Song",
    "stem": "Stem",
}


def kind_word(kind: str) -> str:
    return KIND_WORDS.get(kind, "Result")


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def tempo_key(record: RunRecord) -> tuple[float | None, str | None]:
    """The measured tempo (BPM) and key when the record has them (they may be absent)."""
    compose = record.compose or {}
    bpm = _number(getattr(record, "bpm", None))
    key = getattr(record, "key", None)
    if record.kind != "loop":  # a loop's bpm is the one asked for, shown as such
        bpm = bpm if bpm is not None else _number(compose.get("measured_bpm"))
    return bpm, str(key) if key else None


def seconds_word(seconds: float | None) -> str:
    """8.04 -> "8 s", 0.5 -> "0.5 s", 95 -> "1 min 35 s"."""
    if seconds is None:
        return "–"
    if seconds >= 60:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s"
    return f"{seconds:.0f} s" if seconds >= 2 else f"{seconds:.1f} s"


def badge_text(record: RunRecord) -> str:
    """ "Loop · 120 BPM · 2 bars", "Piece · 3 parts · 28 s", "Variations · 4 takes", ..."""
    compose = record.compose or {}
    word = kind_word(record.kind)
    length = record.audio_seconds or _number(record.duration)
    bits = [word]
    if record.kind == "loop":
        bpm = _number(compose.get("bpm"))
        if bpm is not None:
            bits.append(f"{bpm:g} BPM")
        bars = compose.get("bars")
        if bars:
            bits.append(f"{bars} bar{'s' if int(bars) != 1 else ''}")
    elif record.kind == "extend":
        parts = len(parts_summary(record))
        bits.append(f"{parts} part{'s' if parts != 1 else ''}")
        bits.append(seconds_word(length))
    elif record.kind == "variations":
        takes = len(compose.get("seeds") or []) or int(compose.get("n") or 0)
        bits.append(f"{takes} take{'s' if takes != 1 else ''}")
    elif record.kind in ("song", "arrange"):
        sections = len(compose.get("sections") or [])
        bits.append(f"{sections} section{'s' if sections != 1 else ''}")
        bits.append(seconds_word(length))
    else:
        bits.append(seconds_word(length))
    # The measured tempo and key are not the kind's: the card's meta and the facts show them.
    return " · ".join(bits)


def entry_label(record: RunRecord) -> str:
    """How a result reads in a picker: title, kind, time (never an internal name or an id)."""
    prompt = record.prompt or "(no prompt)"
    prompt = prompt if len(prompt) <= 48 else prompt[:47] + "…"
    when = time.strftime("%b %d, %H:%M:%S", time.localtime(record.created_at))
    return f"{prompt} · {badge_text(record)} · {when}"
