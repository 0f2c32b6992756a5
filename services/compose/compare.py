"""A/B compare: the integrated loudness of two takes, and the gains that match them.

Loudness is measured as ITU-R BS.1770 integrated loudness (LUFS) with pyloudnorm. The gains are
for listening only (the files are never changed): the louder take is turned down by the
difference, so neither is ever pushed above its own level and nothing clips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.compose import audio_ops
from services.errors import AudioError

MIN_MEASURE_SECONDS = 0.4  # one BS.1770 gating block
SILENCE_LUFS = -70.0  # the standard's absolute gate: quieter is silence


@dataclass(frozen=True)
class Loudness:
    """One take's integrated loudness in LUFS (None when it is silent or too short)."""

    lufs: float | None
    seconds: float


@dataclass(frozen=True)
class Match:
    """Two takes' loudness and the listening gains (dB, at most 0) that level them."""

    a: Loudness
    b: Loudness
    a_gain_db: float
    b_gain_db: float

    @property
    def a_volume(self) -> float:
        return volume(self.a_gain_db)

    @property
    def b_volume(self) -> float:
        return volume(self.b_gain_db)

    @property
    def difference_db(self) -> float | None:
        """How much louder A is than B before matching (None if either can't be measured)."""
        if self.a.lufs is None or self.b.lufs is None:
            return None
        return self.a.lufs - self.b.lufs


def volume(gain_db: float) -> float:
    """A gain in dB as an HTML audio element's volume (0..1)."""
    return max(0.0, min(1.0, 10 ** (gain_db / 20)))


def loudness_of(data: np.ndarray, rate: int) -> float | None:
    """Integrated loudness of float samples (frames, channels); None for silence."""
    import pyloudnorm

    if data.shape[0] < MIN_MEASURE_SECONDS * rate:
        # Shorter than one gating block: repeat it so the meter has something to gate.
        reps = math.ceil(MIN_MEASURE_SECONDS * rate / max(1, data.shape[0]))
        data = np.tile(data, (reps, 1)) if data.shape[0] else data
    if data.shape[0] == 0:
        return None
    lufs = float(pyloudnorm.Meter(rate).integrated_loudness(data))
    return lufs if math.isfinite(lufs) and lufs > SILENCE_LUFS else None


def measure(path: Path) -> Loudness:
    """Decode `path` and measure its integrated loudness."""
    try:
        segment = audio_ops.load(path)
    except Exception as err:
        raise AudioError(f"Could not read {path.name} to measure its loudness: {err}") from err
    return Loudness(
        loudness_of(audio_ops.samples(segment), segment.frame_rate), audio_ops.seconds(segment)
    )


def gains(a: Loudness, b: Loudness) -> tuple[float, float]:
    """Listening gains in dB: the louder take down by the difference, the quieter as it is."""
    if a.lufs is None or b.lufs is None:
        return 0.0, 0.0
    difference = a.lufs - b.lufs
    return (-difference, 0.0) if difference > 0 else (0.0, difference)


def match(a_path: Path, b_path: Path) -> Match:
    """Measure two takes and the gains that make them equally loud."""
    a, b = measure(a_path), measure(b_path)
    a_gain, b_gain = gains(a, b)
    return Match(a, b, round(a_gain, 2), round(b_gain, 2))
