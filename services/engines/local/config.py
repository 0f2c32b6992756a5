"""The local engine's settings, read from the environment, and whether it can run at all."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEFAULT_MODEL = "facebook/musicgen-small"
DEFAULT_MELODY_MODEL = "facebook/musicgen-melody"
DEVICES = ("cuda", "mps", "cpu")


@dataclass(frozen=True)
class LocalConfig:
    """Which checkpoints to use and where to run them.

    `default_model` and `melody_model` are Hugging Face ids or local folders; `device` None means
    the best available (CUDA, then Apple's MPS, then the CPU). `preview_seconds` is how much new
    audio each streamed preview holds (0 turns previews off).
    """

    default_model: str = DEFAULT_MODEL
    melody_model: str = DEFAULT_MELODY_MODEL
    device: str | None = None
    preview_seconds: float = 1.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LocalConfig:
        """`MUSICGEN_LOCAL_MODEL`, `MUSICGEN_LOCAL_MELODY_MODEL`, `MUSICGEN_DEVICE`.

        An unknown device name is ignored (auto choice) rather than failing the app's start.
        """
        device = env.get("MUSICGEN_DEVICE", "").strip().lower() or None
        if device is not None and device not in DEVICES:
            log.warning(
                "MUSICGEN_DEVICE=%s is not one of %s: choosing automatically", device, DEVICES
            )
        return cls(
            default_model=env.get("MUSICGEN_LOCAL_MODEL", "").strip() or DEFAULT_MODEL,
            melody_model=env.get("MUSICGEN_LOCAL_MELODY_MODEL", "").strip() or DEFAULT_MELODY_MODEL,
            device=device if device in DEVICES else None,
        )


def local_engine_available() -> bool:
    """True when torch and transformers are installed (checked without importing torch)."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("torch", "transformers", "huggingface_hub")
    )
