"""History search by tempo and key: "A minor", "120 bpm" or "90-110 bpm" inside the search text.

What is left of the text after those are taken out searches the prompts, as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.analysis.tempo_key import MAJOR_NAMES, MINOR_NAMES

BPM_SLACK = 1.0  # "120 bpm" finds takes measured from 119 to 121
_RANGE = re.compile(
    r"\b(\d{2,3}(?:\.\d+)?)\s*(?:-|–|to)\s*(\d{2,3}(?:\.\d+)?)\s*bpm\b", re.IGNORECASE
)
_ONE = re.compile(r"\b(\d{2,3}(?:\.\d+)?)\s*bpm\b", re.IGNORECASE)
_KEY = re.compile(r"(?<![\w#])([A-Ga-g])\s*(#|♯|b|♭)?\s*(major|minor|maj|min)\b", re.IGNORECASE)
_PITCH = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}


@dataclass(frozen=True)
class HistoryQuery:
    """The prompt words to look for, and the key and tempo range asked for (None: any)."""

    text: str
    key: str | None = None
    bpm_min: float | None = None
    bpm_max: float | None = None


def key_name(letter: str, accidental: str | None, mode: str) -> str:
    """A key as the library spells it ("A# minor" -> "Bb minor", "Gb major" -> "F# major")."""
    pitch = _PITCH[letter.lower()] + {"#": 1, "♯": 1, "b": -1, "♭": -1}.get(accidental or "", 0)
    minor = mode.lower().startswith("min")
    names = MINOR_NAMES if minor else MAJOR_NAMES
    return f"{names[pitch % 12]} {'minor' if minor else 'major'}"


def parse_history_query(text: str | None) -> HistoryQuery:
    """Split a history search into prompt words, a key and a BPM range."""
    rest = text or ""
    key = bpm_min = bpm_max = None
    found = _KEY.search(rest)
    if found:
        key = key_name(found.group(1), found.group(2), found.group(3))
        rest = rest[: found.start()] + " " + rest[found.end() :]
    span = _RANGE.search(rest)
    if span:
        low, high = sorted((float(span.group(1)), float(span.group(2))))
        bpm_min, bpm_max = low, high
        rest = rest[: span.start()] + " " + rest[span.end() :]
    else:
        one = _ONE.search(rest)
        if one:
            bpm_min, bpm_max = float(one.group(1)) - BPM_SLACK, float(one.group(1)) + BPM_SLACK
            rest = rest[: one.start()] + " " + rest[one.end() :]
    words = " ".join(rest.replace(",", " ").split())
    return HistoryQuery(words, key, bpm_min, bpm_max)
