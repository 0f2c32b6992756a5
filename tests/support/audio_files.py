"""Real audio files made with ffmpeg for tests (nothing binary is committed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from pydub import AudioSegment

# name -> ffmpeg output options; what browsers record is webm/opus.
FORMATS: dict[str, list[str]] = {
    "wav": ["-c:a", "pcm_s16le"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "128k"],
    "flac": ["-c:a", "flac"],
    "ogg": ["-c:a", "libvorbis"],
    "opus.ogg": ["-c:a", "libopus"],
    "m4a": ["-c:a", "aac"],
    "webm": ["-c:a", "libopus"],
}


def make_tone(
    dest: Path, seconds: float = 3.0, *, fmt: str = "wav", channels: int = 1, freq: int = 440
) -> Path:
    """Write a sine tone of `seconds` in format `fmt` (a key of FORMATS) to `dest`."""
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"sine=frequency={freq}:duration={seconds}:sample_rate=32000",
            "-ac", str(channels), *FORMATS[fmt], str(dest),
        ],
        check=True,
    )  # fmt: skip
    return dest


def samples(path: str | Path) -> tuple[np.ndarray, int, int]:
    """(channels, n) float samples, sampling rate and channel count of an audio file."""
    clip = AudioSegment.from_file(str(path))
    data = np.asarray(clip.get_array_of_samples(), dtype=np.float64) / 32768.0
    return data.reshape(-1, clip.channels).T, clip.frame_rate, clip.channels
