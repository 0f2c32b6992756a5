"""Synthetic tones standing in for MusicGen's output, and decoding of input audio with ffmpeg."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydub import AudioSegment

SAMPLE_RATE = 32000  # MusicGen's EnCodec rate
NOTICE = "Synthetic tones from the MusicGen Studio Replicate emulator - not real music"


class AudioDecodeError(Exception):
    """Input audio that ffmpeg cannot decode."""


@dataclass(frozen=True)
class DecodedAudio:
    """What the emulator learned from decoding an input audio file."""

    format: str
    codec: str
    duration: float
    channels: int
    frame_rate: int
    size: int
    segment: AudioSegment

    def info(self) -> dict[str, object]:
        return {
            "format": self.format,
            "codec": self.codec,
            "duration": self.duration,
            "channels": self.channels,
            "frame_rate": self.frame_rate,
            "size": self.size,
        }


def decode_audio(data: bytes) -> DecodedAudio:
    """Probe and decode bytes as audio; raise AudioDecodeError when ffmpeg cannot."""
    if not data:
        raise AudioDecodeError("the file is empty")
    with tempfile.TemporaryDirectory(prefix="emu-audio-") as tmp:
        path = Path(tmp) / "input"
        path.write_bytes(data)
        probe = subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-show_entries",
                "format=format_name:stream=codec_type,codec_name,channels,sample_rate",
                "-of",
                "json",
                str(path),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode != 0:
            raise AudioDecodeError(probe.stderr.strip() or "ffprobe failed")
        info = json.loads(probe.stdout or "{}")
        streams = [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
        if not streams:
            raise AudioDecodeError("no audio stream found")
        try:
            segment = AudioSegment.from_file(str(path))
        except Exception as exc:  # pydub raises CouldntDecodeError and others
            raise AudioDecodeError(str(exc).strip().splitlines()[-1][:300]) from exc
    if len(segment) == 0:
        raise AudioDecodeError("the audio has no samples")
    return DecodedAudio(
        format=str(info.get("format", {}).get("format_name", "")),
        codec=str(streams[0].get("codec_name", "")),
        duration=segment.duration_seconds,
        channels=segment.channels,
        frame_rate=segment.frame_rate,
        size=len(data),
        segment=segment,
    )


def _root_hz(seed: int, prompt: str) -> float:
    """A root pitch derived from the seed and prompt, so different requests sound different."""
    digest = hashlib.sha256(f"{seed}:{prompt}".encode()).digest()
    midi = 45 + digest[0] % 24  # A2 .. G#4
    return 440.0 * 2 ** ((midi - 69) / 12)


def tones(seconds: float, channels: int, seed: int, prompt: str) -> np.ndarray:
    """Float samples (frames x channels) of a slow chord progression with soft note envelopes."""
    frames = max(0, round(seconds * SAMPLE_RATE))
    t = np.arange(frames) / SAMPLE_RATE
    root = _root_hz(seed, prompt)
    progression = [(0, 4, 7), (5, 9, 12), (7, 11, 14), (0, 4, 7)]
    beat = 0.5
    chord_index = (t // (beat * 4)).astype(int) % len(progression)
    envelope = np.exp(-3.0 * (t % beat))
    out = np.zeros((frames, channels))
    for channel in range(channels):
        detune = 1.0 + 0.002 * channel
        signal = np.zeros(frames)
        for voice in range(3):
            steps = np.array([chord[voice] for chord in progression])[chord_index]
            signal += np.sin(2 * np.pi * root * detune * 2 ** (steps / 12) * t)
        out[:, channel] = 0.2 * signal * envelope
    return out


def _pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def _wav_bytes(pcm: bytes, channels: int) -> bytes:
    """A 16-bit PCM WAV with a LIST/INFO comment saying it is synthetic."""
    comment = NOTICE.encode() + b"\x00"
    if len(comment) % 2:
        comment += b"\x00"
    info = b"INFO" + b"ICMT" + struct.pack("<I", len(comment)) + comment
    fmt = struct.pack(
        "<HHIIHH", 1, channels, SAMPLE_RATE, SAMPLE_RATE * channels * 2, channels * 2, 16
    )
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"LIST"
        + struct.pack("<I", len(info))
        + info
        + b"data"
        + struct.pack("<I", len(pcm))
        + pcm
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def render_output(
    *,
    seconds: float,
    channels: int,
    seed: int,
    prompt: str,
    output_format: str,
    prefix: AudioSegment | None = None,
) -> bytes:
    """The output file, `seconds` long: `prefix` (a continuation's prompt slice) then tones."""
    head = b""
    head_seconds = 0.0
    if prefix is not None and len(prefix) > 0:
        prefix = prefix.set_frame_rate(SAMPLE_RATE).set_channels(channels).set_sample_width(2)
        prefix = prefix[: int(seconds * 1000)]
        head = prefix.raw_data
        head_seconds = len(head) / (2 * channels * SAMPLE_RATE)
    pcm = head + _pcm16(tones(max(0.0, seconds - head_seconds), channels, seed, prompt))
    if output_format == "wav":
        return _wav_bytes(pcm, channels)
    segment = AudioSegment(data=pcm, sample_width=2, frame_rate=SAMPLE_RATE, channels=channels)
    buffer = io.BytesIO()
    segment.export(buffer, format="mp3", bitrate="128k", tags={"comment": NOTICE})
    return buffer.getvalue()
