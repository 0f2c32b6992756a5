"""The generation request: every input of meta/musicgen, with the model's own defaults.

Declared once in `services.musicgen`; this module is the name the rest of the studio imports.
"""

from __future__ import annotations

from services.musicgen import (
    COHERENT_MAX_SECONDS,
    MELODY_MODELS,
    MODEL_VERSIONS,
    NORMALIZATION_STRATEGIES,
    OUTPUT_FORMATS,
    STEREO_MODELS,
    GenerationRequest,
)

__all__ = [
    "COHERENT_MAX_SECONDS",
    "MELODY_MODELS",
    "MODEL_VERSIONS",
    "NORMALIZATION_STRATEGIES",
    "OUTPUT_FORMATS",
    "STEREO_MODELS",
    "GenerationRequest",
]
