"""What a run reports while it moves: one immutable update per change, for the UI to show."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})
# A paid run whose audio is fetched again and again while its URL lives (not yet terminal).
DOWNLOADING = "downloading"

# The model prints token progress as "    NN /    TOTAL" (50 tokens per second of audio).
PROGRESS_LINE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
SEED_LINE = re.compile(r"^\s*Using seed (-?\d+)\s*$")


@dataclass(frozen=True)
class Progress:
    done: int
    total: int

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0


@dataclass(frozen=True)
class RunUpdate:
    """A snapshot of one run after something changed.

    `status` is the API's status, or one of the studio's own stages before the prediction
    exists: "validating", "preparing" (audio conversion/upload), "creating".
    `new_logs` are the log lines that arrived since the previous update.
    `run_id` is the library's id of the run; `audio_path` is set on the final update of a
    successful run (by an engine: its checked file in the run's scratch folder; by the
    generation service: the filed copy in the library).
    `queue_position` (1 = next) is set while a run waits for a busy device; `preview_path` is a
    16-bit PCM wav holding the audio decoded since the previous preview, for the page to play
    while the run goes on. `predict_time` (seconds the model worked) and `realtime_factor`
    (those seconds per second of audio) come with the terminal update where the engine knows
    them.
    `audio_seconds` comes with `audio_path` when the engine has already checked the file (its
    measured length): the service then files it without probing it again.
    """

    status: str
    prediction_id: str | None = None
    new_logs: tuple[str, ...] = ()
    progress: Progress | None = None
    seed: int | None = None
    elapsed: float = 0.0
    error: str | None = None
    run_id: str | None = None
    audio_path: str | None = None
    queue_position: int | None = None
    preview_path: str | None = None
    predict_time: float | None = None
    realtime_factor: float | None = None
    audio_seconds: float | None = None
    prediction: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


def split_log_lines(text: str) -> list[str]:
    """Split a log blob into lines; the model's progress uses \\r, so treat it as a newline."""
    return [ln for ln in re.split(r"\r\n|\r|\n", text) if ln.strip()]


def progress_reading(line: str) -> Progress | None:
    """MusicGen's progress reading on one log line ("    NN /    TOTAL"), if it is one."""
    m = PROGRESS_LINE.match(line)
    return Progress(int(m.group(1)), int(m.group(2))) if m else None


def seed_reading(line: str) -> int | None:
    """The seed MusicGen reports on one log line ("Using seed N"), if it is that line."""
    m = SEED_LINE.match(line)
    return int(m.group(1)) if m else None


def parse_seed(lines: list[str]) -> int | None:
    """The seed the model reported with `Using seed N`, if any."""
    return next((seed for seed in map(seed_reading, lines) if seed is not None), None)


def output_url(prediction: Mapping[str, Any]) -> str | None:
    """The output file's URL: one URI (older versions: a list of them)."""
    output = prediction.get("output")
    if isinstance(output, list):
        output = output[-1] if output else None
    return output if isinstance(output, str) and output else None
