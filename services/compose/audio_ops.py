"""Audio surgery for compositions: decode, slice, join with an equal-power crossfade, export.

pydub decodes, slices and exports (through ffmpeg). The crossfade itself is computed on the
samples: pydub's own `append(crossfade=...)` fades linearly in decibels, which dips in the
middle of the joint instead of keeping the power constant.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from pydub import AudioSegment

EXPORT_OPTIONS: dict[str, dict[str, object]] = {
    "wav": {"format": "wav"},
    "mp3": {"format": "mp3", "bitrate": "320k"},
    "flac": {"format": "flac"},
}


def load(path: Path) -> AudioSegment:
    """Decode any audio file the studio handles."""
    return AudioSegment.from_file(str(path))


def load_bytes(data: bytes) -> AudioSegment:
    """Decode audio held in memory."""
    return AudioSegment.from_file(io.BytesIO(data))


def samples(segment: AudioSegment) -> np.ndarray:
    """Float samples in [-1, 1], shape (frames, channels)."""
    raw = np.array(segment.get_array_of_samples(), dtype=np.float64)
    full_scale = float(1 << (8 * segment.sample_width - 1))
    return raw.reshape(-1, segment.channels) / full_scale


def from_samples(data: np.ndarray, like: AudioSegment) -> AudioSegment:
    """A segment with `like`'s rate, width and channels holding `data` (frames, channels)."""
    full_scale = float(1 << (8 * like.sample_width - 1))
    clipped = np.clip(data, -1.0, (full_scale - 1) / full_scale)
    dtype = {1: np.int8, 2: np.int16, 4: np.int32}[like.sample_width]
    ints = np.round(clipped * full_scale).astype(dtype)
    return like._spawn(ints.reshape(-1).tobytes())


def matched(segment: AudioSegment, like: AudioSegment) -> AudioSegment:
    """`segment` at `like`'s sample rate, width and channel count."""
    return (
        segment.set_frame_rate(like.frame_rate)
        .set_channels(like.channels)
        .set_sample_width(like.sample_width)
    )


def seconds(segment: AudioSegment) -> float:
    return float(segment.frame_count()) / float(segment.frame_rate)


def frames(segment: AudioSegment, start: float, end: float | None = None) -> AudioSegment:
    """The part from `start` to `end` seconds, cut on exact sample frames."""
    rate = segment.frame_rate
    first = max(0, round(start * rate))
    last = segment.frame_count() if end is None else min(segment.frame_count(), round(end * rate))
    return segment.get_sample_slice(int(first), int(max(first, last)))


def equal_power_join(head: AudioSegment, tail: AudioSegment, overlap: float) -> AudioSegment:
    """`head` then `tail`, their `overlap` seconds mixed with cos/sin gains (constant power).

    The last `overlap` seconds of `head` fade out while the first `overlap` seconds of `tail`
    fade in, so the result is len(head) + len(tail) - overlap long.
    """
    tail = matched(tail, head)
    n = min(round(overlap * head.frame_rate), head.frame_count(), tail.frame_count())
    if n <= 0:
        return head + tail
    a, b = samples(head), samples(tail)
    t = (np.arange(n) + 0.5) / n
    fade_out, fade_in = np.cos(t * np.pi / 2)[:, None], np.sin(t * np.pi / 2)[:, None]
    mixed = np.concatenate([a[:-n], a[-n:] * fade_out + b[:n] * fade_in, b[n:]])
    return from_samples(mixed, head)


def export(segment: AudioSegment, path: Path, fmt: str) -> Path:
    """Write `segment` as wav, mp3 or flac at `path` (atomically: a part file, then a rename)."""
    part = path.with_name(f".{path.name}.part")
    segment.export(str(part), **EXPORT_OPTIONS[fmt])
    part.replace(path)
    return path
