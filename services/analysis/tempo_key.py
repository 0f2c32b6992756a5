"""A take's tempo (beat tracking, refined from the beat times) and key (Krumhansl-Schmuckler).

librosa's beat tracker places beats on its analysis frames, so its own tempo is quantised
(clicks at 97 BPM read 96.2). Here the beats only say *where* the pulse is: the tempo is the
slope of a straight line fitted through the beat times, each beat numbered by how many periods
it lies from the first one (so a beat the tracker skipped does not bend the line).

The key correlates the take's average chroma with the Krumhansl-Kessler major and minor
profiles (Krumhansl 1990, "Cognitive Foundations of Musical Pitch"), rotated to each of the 12
tonics; the best of the 24 names the key. The chroma comes from a long-window STFT (8192
samples, 2.7 Hz bins at 22.05 kHz), not librosa's constant-Q transform: on 96 synthesized
progressions (24 keys; 1 to 8 harmonics, detuned by up to 30 cents, with noise) it named 96
keys against the CQT's 94, at about 19 ms of CPU per take against 158 ms, most of which the
CQT spends building its filter bank again on every call (a crowd's takes queued behind it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.compose import audio_ops

ANALYSIS_RATE = 22050
HOP = 256  # ~11.6 ms frames at 22.05 kHz: finer beat positions for the fit
MIN_BEATS = 4
OFF_GRID = 0.1  # a beat further than this share of a period from the fitted line
SILENCE_RMS = 1e-4
KEY_WINDOW = 8192  # samples: semitones apart even in the bass (2.7 Hz bins at 22.05 kHz)
# Krumhansl-Kessler probe-tone ratings, tonic first.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
# How musicians usually spell each tonic in a major and in a minor key.
MAJOR_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")


@dataclass(frozen=True)
class TempoKey:
    """What was measured; None where the audio gave no answer (silence, no pulse)."""

    bpm: float | None
    key: str | None


def mono_samples(path: Path, rate: int = ANALYSIS_RATE) -> np.ndarray:
    """The file decoded, mixed to mono and resampled to `rate` (float32)."""
    segment = audio_ops.load(path).set_frame_rate(rate)
    return np.asarray(audio_ops.samples(segment).mean(axis=1), dtype=np.float32)


def refined_tempo(beat_times: np.ndarray) -> float | None:
    """BPM from beat times: the least-squares period of the beats, numbered by period."""
    times = np.asarray(beat_times, dtype=np.float64)
    if times.size < MIN_BEATS:
        return None
    period = float(np.median(np.diff(times)))
    if period <= 0:
        return None
    index = np.round((times - times[0]) / period)
    # Two beats on one index (a doubled beat) would pull the fit: keep the first of each.
    index, first = np.unique(index, return_index=True)
    times = times[first]
    for _ in range(2):
        if index.size < MIN_BEATS:
            return None
        slope, offset = np.polyfit(index, times, 1)
        # A beat the tracker put off the grid (often the last one, at the trimmed end) is
        # dropped and the line fitted again through the rest.
        keep = np.abs(times - (slope * index + offset)) <= OFF_GRID * period
        if keep.all():
            break
        index, times = index[keep], times[keep]
    return 60.0 / float(slope) if slope > 0 else None


def _peak_frames(envelope: np.ndarray, beats: np.ndarray) -> np.ndarray:
    """Each beat moved to its onset's peak, between frames (a parabola through the peak and
    its neighbours): the frame grid's rounding is what makes 97 BPM read 96.2."""
    refined = []
    for beat in beats:
        lo, hi = max(1, int(beat) - 2), min(envelope.size - 2, int(beat) + 2)
        if lo > hi:
            refined.append(float(beat))
            continue
        peak = lo + int(np.argmax(envelope[lo : hi + 1]))
        left, mid, right = envelope[peak - 1], envelope[peak], envelope[peak + 1]
        curve = left - 2 * mid + right
        offset = 0.5 * (left - right) / curve if curve < 0 else 0.0
        refined.append(peak + float(np.clip(offset, -0.5, 0.5)))
    return np.asarray(refined, dtype=np.float64)


def measure_tempo(mono: np.ndarray, rate: int = ANALYSIS_RATE) -> float | None:
    """The take's tempo in BPM, one decimal; None when there is no steady pulse."""
    import librosa  # heavy (numba): loaded only when a take is measured

    if mono.size == 0 or float(np.sqrt(np.mean(mono**2))) < SILENCE_RMS:
        return None
    envelope = librosa.onset.onset_strength(y=mono, sr=rate, hop_length=HOP)
    _, beats = librosa.beat.beat_track(onset_envelope=envelope, sr=rate, hop_length=HOP)
    frames = _peak_frames(envelope, np.asarray(beats, dtype=np.int64))
    bpm = refined_tempo(frames * HOP / rate)
    return None if bpm is None else round(bpm, 1)


def key_of_chroma(chroma: np.ndarray) -> str | None:
    """The best of the 24 major and minor keys for a 12-bin chroma vector (C first)."""
    profile = np.asarray(chroma, dtype=np.float64).reshape(12)
    if not np.any(profile > 0) or np.ptp(profile) == 0:
        return None
    best: tuple[float, str] = (-2.0, "")
    for tonic in range(12):
        for template, names, mode in (
            (MAJOR_PROFILE, MAJOR_NAMES, "major"),
            (MINOR_PROFILE, MINOR_NAMES, "minor"),
        ):
            score = float(np.corrcoef(profile, np.roll(template, tonic))[0, 1])
            if score > best[0]:
                best = (score, f"{names[tonic]} {mode}")
    return best[1] or None


def measure_key(mono: np.ndarray, rate: int = ANALYSIS_RATE) -> str | None:
    """The take's key, e.g. "A minor"; None for silence or unpitched sound."""
    import librosa

    if mono.size == 0 or float(np.sqrt(np.mean(mono**2))) < SILENCE_RMS:
        return None
    chroma = librosa.feature.chroma_stft(y=mono, sr=rate, n_fft=KEY_WINDOW, hop_length=2048)
    return key_of_chroma(chroma.mean(axis=1))


def measure(path: Path) -> TempoKey:
    """Tempo and key of the audio file at `path` (CPU work: call it off the event loop)."""
    mono = mono_samples(path)
    return TempoKey(bpm=measure_tempo(mono), key=measure_key(mono))


def warm_up() -> None:
    """Measure a short synthetic click track: librosa loads its parts and numba compiles the
    beat tracker on first use (several seconds), best done while a model is still working."""
    rate = ANALYSIS_RATE
    clicks = np.zeros(rate * 3, np.float32)
    for beat in range(6):
        clicks[beat * rate // 2 : beat * rate // 2 + 200] = 0.5
    measure_tempo(clicks, rate)
    measure_key(clicks, rate)
