"""Reading clips into sample arrays and writing sample arrays out as wav or mp3 (pydub)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from services.errors import AudioError

# audiocraft's audio_write writes mp3 at 320 kb/s.
MP3_BITRATE = "320k"


def read_clip(
    path: str | os.PathLike[str],
    *,
    sampling_rate: int,
    channels: int,
    start: float = 0.0,
    end: float | None = None,
) -> np.ndarray:
    """Samples [start, end) of a clip as float32 (channels, n) at `sampling_rate`.

    Mono clips are copied to both sides for stereo models; stereo clips are averaged for mono.
    """
    from pydub import AudioSegment
    from pydub.exceptions import CouldntDecodeError

    try:
        clip = AudioSegment.from_file(str(path))
    except (CouldntDecodeError, OSError, IndexError) as why:
        raise AudioError(f"The clip could not be read as audio: {why}") from None
    total = clip.frame_count() / clip.frame_rate
    if start >= total:
        raise AudioError(
            f"The clip lasts {total:.1f} s, so it can't be continued from {start:g} s. "
            "Lower continuation_start."
        )
    stop = total if end is None else min(end, total)
    first, last = round(start * clip.frame_rate), round(stop * clip.frame_rate)
    peak = float(1 << (8 * clip.sample_width - 1))
    samples = np.asarray(clip.get_array_of_samples(), dtype=np.float32) / peak
    samples = samples.reshape(-1, clip.channels).T[:, first:last]
    if clip.channels != channels:
        samples = samples.mean(axis=0, keepdims=True)
        samples = np.repeat(samples, channels, axis=0)
    return resample(samples, clip.frame_rate, sampling_rate)


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited polyphase resampling (scipy), exact in length: n * rate_out / rate_in."""
    if rate_in == rate_out or samples.shape[-1] == 0:
        return np.ascontiguousarray(samples, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(rate_in, rate_out)
    out = resample_poly(samples, rate_out // g, rate_in // g, axis=-1)
    return np.ascontiguousarray(out, dtype=np.float32)


def write_audio(samples: np.ndarray, path: Path, *, sampling_rate: int, fmt: str) -> Path:
    """Write float samples (channels, n) as 16-bit PCM wav or mp3 to `path`, atomically."""
    from pydub import AudioSegment

    pcm = np.clip(samples, -1.0, 1.0)
    ints = np.round(pcm.T * 32767.0).astype("<i2")
    segment = AudioSegment(
        data=ints.tobytes(), sample_width=2, frame_rate=sampling_rate, channels=samples.shape[0]
    )
    partial = path.with_name(f".{path.name}.partial")
    try:
        if fmt == "mp3":
            segment.export(str(partial), format="mp3", bitrate=MP3_BITRATE)
        else:
            segment.export(str(partial), format="wav")
    except Exception as why:
        partial.unlink(missing_ok=True)
        raise AudioError(f"The {fmt} file could not be written: {why}") from None
    os.replace(partial, path)
    return path
