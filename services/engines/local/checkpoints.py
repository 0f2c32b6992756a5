"""The MusicGen checkpoints the engine knows by name, and the choice of device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.engines.local.precision import Precision, resolve_precision

KNOWN_CHECKPOINTS: dict[str, str] = {
    "facebook/musicgen-small": "Mono, text only; 300M, the fastest",
    "facebook/musicgen-medium": "Mono, text only; 1.5B",
    "facebook/musicgen-large": "Mono, text only; 3.3B, needs a large GPU",
    "facebook/musicgen-melody": "Mono, can follow a melody; 1.5B",
    "facebook/musicgen-melody-large": "Mono, can follow a melody; 3.3B",
    "facebook/musicgen-stereo-small": "Stereo, text only; 300M",
    "facebook/musicgen-stereo-medium": "Stereo, text only; 1.5B",
    "facebook/musicgen-stereo-large": "Stereo, text only; 3.3B",
    "facebook/musicgen-stereo-melody": "Stereo, can follow a melody; 1.5B",
    "facebook/musicgen-stereo-melody-large": "Stereo, can follow a melody; 3.3B",
}


def describe(checkpoint: str) -> str:
    """A short description of a checkpoint, also for configured ones the table doesn't know."""
    if checkpoint in KNOWN_CHECKPOINTS:
        return KNOWN_CHECKPOINTS[checkpoint]
    where = "folder on this machine" if Path(checkpoint).expanduser().is_dir() else "checkpoint"
    return f"Configured {where}"


@dataclass(frozen=True)
class Device:
    """Where the model runs: `name` is "cuda", "mps" or "cpu", at `precision`."""

    name: str
    precision: Precision = "fp32"


def choose_device(override: str | None, precision: str = "auto") -> Device:
    """The configured device, else CUDA if present, else MPS, else the CPU; `precision` is the
    `MUSICGEN_LOCAL_PRECISION` setting, resolved for that device.

    Imports torch: call it from the worker thread, never at import time.
    """
    import torch

    name = override
    if name is None:
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    return Device(name, resolve_precision(precision, name))
