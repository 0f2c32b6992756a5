"""Output normalization, after audiocraft's `audio_write` (what Replicate's model applies).

audiocraft's defaults, kept here: peak and clip leave 1 dB of headroom (peak at -1 dBFS), rms
aims the mono RMS at -18 dBFS, loudness aims at -14 LUFS (ITU-R BS.1770, measured with
pyloudnorm where audiocraft uses torchaudio). Two deliberate differences: after loudness (and
rms) gain, audio that would exceed full scale is turned down to peak at 0 dBFS instead of being
hard-clipped (audiocraft clamps; that distorts), and near-silence is left alone (audiocraft's
2e-3 RMS floor) rather than boosted into noise.
"""

from __future__ import annotations

import numpy as np

PEAK_HEADROOM_DB = 1.0
RMS_HEADROOM_DB = 18.0
LOUDNESS_TARGET_LUFS = -14.0
ENERGY_FLOOR = 2e-3
# pyloudnorm's gating block; shorter audio is measured in one block.
LOUDNESS_BLOCK_S = 0.4


def _db(db: float) -> float:
    return float(10 ** (db / 20))


def _under_full_scale(samples: np.ndarray) -> np.ndarray:
    peak = float(np.abs(samples).max(initial=0.0))
    return samples / peak if peak > 1.0 else samples


def loudness_lufs(samples: np.ndarray, sampling_rate: int) -> float:
    """Integrated loudness of (channels, n) float samples, in LUFS."""
    import pyloudnorm

    seconds = samples.shape[-1] / sampling_rate
    meter = pyloudnorm.Meter(sampling_rate, block_size=min(LOUDNESS_BLOCK_S, seconds))
    return float(meter.integrated_loudness(samples.T.astype(np.float64)))


def normalize(samples: np.ndarray, strategy: str, sampling_rate: int) -> np.ndarray:
    """`samples` (channels, n) normalized by `strategy`: loudness, clip, peak or rms."""
    samples = samples.astype(np.float32, copy=False)
    if samples.size == 0:
        return samples
    if strategy == "clip":
        limit = _db(-PEAK_HEADROOM_DB)
        clipped: np.ndarray = np.clip(samples, -limit, limit)
        return clipped
    if strategy == "peak":
        peak = float(np.abs(samples).max())
        return samples * (_db(-PEAK_HEADROOM_DB) / peak) if peak > 0 else samples
    if float(np.sqrt(np.mean(samples**2))) < ENERGY_FLOOR:
        return samples
    if strategy == "rms":
        rms = float(np.sqrt(np.mean(samples.mean(axis=0) ** 2)))
        if rms <= 0:  # stereo sides in exact opposition: nothing to measure in mono
            return samples
        return _under_full_scale(samples * (_db(-RMS_HEADROOM_DB) / rms))
    if strategy == "loudness":
        measured = loudness_lufs(samples, sampling_rate)
        if not np.isfinite(measured):
            return samples
        gained = samples * _db(LOUDNESS_TARGET_LUFS - measured)
        return _under_full_scale(gained).astype(np.float32)
    raise ValueError(f"unknown normalization strategy {strategy!r}")
