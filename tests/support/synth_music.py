"""Synthesized music of known tempo, key and notes, for the analysis tests (no files committed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.compose import audio_ops
from tests.support.audio_files import make_tone

RATE = 22050


def clicks(bpm: float, seconds: float = 12.0, rate: int = RATE) -> np.ndarray:
    """A metronome: a short 1 kHz click on every beat, the first of each bar louder."""
    out = np.zeros(int(rate * seconds), np.float32)
    n = int(rate * 0.02)
    t = np.arange(n) / rate
    click = (np.sin(2 * np.pi * 1000 * t) * np.exp(-np.linspace(0, 8, n))).astype(np.float32)
    beat = 0
    while (start := round(beat * 60.0 / bpm * rate)) + n <= out.size:
        out[start : start + n] += click * (1.0 if beat % 4 == 0 else 0.6)
        beat += 1
    return out


def hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def notes(
    pitches: list[list[int]] | list[list[float]],
    seconds: float = 1.0,
    rate: int = RATE,
    gap: float = 0.0,
) -> np.ndarray:
    """Each group of MIDI pitches sounded together for `seconds` (a triad, or one note) with a
    soft attack and release, then `gap` seconds of silence, in turn."""
    t = np.arange(int(rate * seconds)) / rate
    fade = np.minimum(1.0, np.minimum(t, seconds - t) / 0.01)
    pieces = []
    for group in pitches:
        tone = sum(np.sin(2 * np.pi * hz(m) * t) for m in group) / len(group)
        pieces.append((0.5 * tone * fade).astype(np.float32))
        pieces.append(np.zeros(int(rate * gap), np.float32))
    return np.concatenate(pieces)


def write_wav(samples: np.ndarray, dest: Path, rate: int = RATE, channels: int = 1) -> Path:
    """`samples` (mono) as a 16-bit WAV with `channels` identical channels."""
    like = audio_ops.load(make_tone(dest.with_suffix(".like.wav"), 0.1, channels=channels))
    like = like.set_frame_rate(rate)
    dest.with_suffix(".like.wav").unlink()
    data = np.repeat(np.asarray(samples, np.float64).reshape(-1, 1), channels, axis=1)
    audio_ops.export(audio_ops.from_samples(data, like), dest, "wav")
    return dest


A_MINOR = [[57, 60, 64], [62, 65, 69], [64, 68, 71], [57, 60, 64]]  # Am Dm E Am
G_MAJOR = [[55, 59, 62], [60, 64, 67], [62, 66, 69], [55, 59, 62]]  # G C D G
