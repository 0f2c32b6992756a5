"""The local engine's settings, read from the environment, and whether it can run at all."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from services.engines.local.precision import parse_precision
from services.engines.local.zerogpu import zero_gpu_enabled

log = logging.getLogger(__name__)

DEFAULT_MODEL = "facebook/musicgen-small"
DEFAULT_MELODY_MODEL = "facebook/musicgen-melody"
DEVICES = ("cuda", "mps", "cpu")
# Checkpoints kept loaded at once, per device. A CPU machine's RAM holds one comfortably (a
# take uses one; musicgen-small peaks at ~3 GB of RSS at int8 and fp32, melody at ~6 GB).
# On a GPU two: the text checkpoint and the melody one that a melody clip switches to, without
# reloading either on every switch (small + melody at fp16 is ~3.6 GB, large + melody-large
# ~14 GB: a 16 GB+ card). MUSICGEN_LOCAL_MAX_MODELS overrides it.
MAX_MODELS = {"cpu": 1, "mps": 1, "cuda": 2}
# Waiting runs per visitor on a shared deployment (MUSICGEN_SHARED, or a Space) by default.
DEFAULT_MAX_QUEUED_SHARED = 3


@dataclass(frozen=True)
class LocalConfig:
    """Which checkpoints to use and where to run them.

    `default_model` and `melody_model` are Hugging Face ids or local folders; `device` None means
    the best available (CUDA, then Apple's MPS, then the CPU). `preview_seconds` is how much new
    audio each streamed preview holds (0 turns previews off); `preview_lead_seconds` how long
    before the take is done a preview must be ready to be worth writing (one that the final take
    would replace before it is heard costs the page CPU for nothing; estimated from the measured
    seconds per decoding step, 0: every preview is written). `precision` is
    `MUSICGEN_LOCAL_PRECISION` (auto, fp32, fp16, bf16, int8); `max_models` how many checkpoints
    stay loaded (None: `MAX_MODELS` of the device). `max_batch` caps the takes made in
    one pass (None: the device's default, `batch.default_max_batch`); `max_queued_per_visitor`
    caps each visitor's waiting runs (a group of variations counts once; 0: no cap).
    """

    default_model: str = DEFAULT_MODEL
    melody_model: str = DEFAULT_MELODY_MODEL
    device: str | None = None
    preview_seconds: float = 1.0
    preview_lead_seconds: float = 1.0
    precision: str = "auto"
    max_models: int | None = None
    zero_gpu: bool = False  # on a ZeroGPU Space: generation runs inside spaces.GPU
    max_batch: int | None = None
    max_queued_per_visitor: int = 0

    def models_on(self, device: str) -> int:
        """How many checkpoints may stay loaded on `device`."""
        return self.max_models or MAX_MODELS.get(device, 1)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LocalConfig:
        """`MUSICGEN_LOCAL_MODEL`, `MUSICGEN_LOCAL_MELODY_MODEL`, `MUSICGEN_DEVICE`,
        `MUSICGEN_LOCAL_PRECISION`, `MUSICGEN_LOCAL_MAX_MODELS`, `MUSICGEN_LOCAL_MAX_BATCH`,
        `MUSICGEN_LOCAL_MAX_QUEUED_PER_VISITOR` (default `DEFAULT_MAX_QUEUED_SHARED` on a shared
        deployment, no cap otherwise).

        An unknown device or precision is ignored (auto choice), and a count that is not a
        whole number in its range means the default, rather than failing the app's start.
        """
        shared = env.get("MUSICGEN_SHARED", "").strip().lower() in ("1", "true", "yes", "on")
        shared = shared or bool(env.get("SPACE_ID"))
        device = env.get("MUSICGEN_DEVICE", "").strip().lower() or None
        if device is not None and device not in DEVICES:
            log.warning(
                "MUSICGEN_DEVICE=%s is not one of %s: choosing automatically", device, DEVICES
            )
        return cls(
            default_model=env.get("MUSICGEN_LOCAL_MODEL", "").strip() or DEFAULT_MODEL,
            melody_model=env.get("MUSICGEN_LOCAL_MELODY_MODEL", "").strip() or DEFAULT_MELODY_MODEL,
            device=device if device in DEVICES else None,
            precision=parse_precision(env.get("MUSICGEN_LOCAL_PRECISION", "")),
            max_models=_whole(env, "MUSICGEN_LOCAL_MAX_MODELS", None, least=1),
            zero_gpu=zero_gpu_enabled(env),
            max_batch=_whole(env, "MUSICGEN_LOCAL_MAX_BATCH", None, least=1),
            max_queued_per_visitor=_whole(
                env,
                "MUSICGEN_LOCAL_MAX_QUEUED_PER_VISITOR",
                DEFAULT_MAX_QUEUED_SHARED if shared else 0,
                least=0,
            )
            or 0,
        )


def _whole(env: Mapping[str, str], name: str, default: int | None, *, least: int) -> int | None:
    """A whole-number setting of at least `least`, or `default` (with a warning) if it is not."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
        if value < least:
            raise ValueError
    except ValueError:
        log.warning("%s=%s is not a whole number from %d: using the default", name, raw, least)
        return default
    return value


def local_engine_available() -> bool:
    """True when torch and transformers are installed (checked without importing torch)."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("torch", "transformers", "huggingface_hub")
    )
