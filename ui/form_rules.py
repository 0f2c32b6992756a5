"""The form's rules without Gradio: what each control may do given the others, and the request.

Every control that cannot apply is disabled and says why; `request_values` turns the form into
the loose values `GenerationService.prepare` validates (it refuses what the form lets through).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from services.musicgen import (
    BY_NAME,
    COHERENT_MAX_SECONDS,
    DURATION_MAX,
    LIMITS,
    MELODY_MODELS,
    STEREO_MODELS,
    GenerationRequest,
)
from services.validation import CONTINUE_MIN_SECONDS

DURATION_MIN = int(LIMITS["duration"].low)

# "Longer than 30 s" unlocks durations up to the request's own limit.
LONG_MAX_SECONDS = DURATION_MAX
USE_MELODY = "melody"
USE_CONTINUATION = "continuation"
USE_CHOICES = [
    ("Follow it as a melody", USE_MELODY),
    ("Continue it (the result starts with the clip)", USE_CONTINUATION),
]
# "Continue this": how much of the end of a clip to keep as the start of the new piece.
CONTINUE_TAIL_SECONDS = 10
CONTINUE_NEW_SECONDS = 8
MELODY_COUNTERPART = {"stereo-large": "stereo-melody-large", "large": "melody-large"}


@dataclass(frozen=True)
class ControlState:
    """How one control should look: usable or not, its help line, and a value to force."""

    interactive: bool
    info: str
    value: Any = None
    force_value: bool = False


_MODEL = GenerationRequest()  # the model's defaults


@dataclass(frozen=True)
class FormValues:
    """The form as the page holds it (labels, switches and sliders); the model's defaults."""

    prompt: str = _MODEL.prompt
    model_version: str = _MODEL.model_version
    duration: float = _MODEL.duration
    long_mode: bool = False
    input_audio: str | None = _MODEL.input_audio
    audio_use: str = USE_MELODY
    continuation_start: float = _MODEL.continuation_start
    continuation_end: float = 0
    to_end: bool = True
    top_k: float = _MODEL.top_k
    top_p: float = _MODEL.top_p
    temperature: float = _MODEL.temperature
    classifier_free_guidance: float = _MODEL.classifier_free_guidance
    random_seed: bool = True
    seed: float | None = _MODEL.seed
    normalization_strategy: str = _MODEL.normalization_strategy
    output_format: str = _MODEL.output_format
    multi_band_diffusion: bool = _MODEL.multi_band_diffusion
    # Inputs the page has no hand-made control for (see EXTRA_INPUTS), by name.
    extras: Mapping[str, Any] = field(default_factory=dict)


# The inputs the form above lays out by hand ("continuation" is its "Use the clip as" choice).
LAID_OUT = frozenset({f.name for f in fields(FormValues)} | {"continuation"})
# A model input added to the schema and not (yet) laid out by hand still gets a control of its
# kind, under "More inputs": adding an input to services/musicgen.py is all it takes.
EXTRA_INPUTS: tuple[str, ...] = tuple(name for name in BY_NAME if name not in LAID_OUT)


def form_values(components: Sequence[Any]) -> FormValues:
    """The handler's inputs (the form's components' values, in `Form.components` order)."""
    laid_out = len(fields(FormValues)) - 1  # every field but `extras`
    extras = dict(zip(EXTRA_INPUTS, components[laid_out:], strict=True))
    return replace(FormValues(*components[:laid_out]), extras=extras)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def request_values(form: FormValues) -> dict[str, Any]:
    """The loose request values for `GenerationService.prepare` (named as the model names them).

    Fields that cannot apply are left at the model's defaults so they never cause a refusal:
    start/end without a clip to continue, a fixed seed while "random" is ticked.
    """
    has_audio = bool(form.input_audio)
    continuing = has_audio and form.audio_use == USE_CONTINUATION
    return {
        "prompt": form.prompt or "",
        "input_audio": form.input_audio or None,
        "duration": form.duration,
        "continuation": continuing,
        "continuation_start": form.continuation_start if continuing else 0,
        "continuation_end": None if (not continuing or form.to_end) else form.continuation_end,
        "model_version": form.model_version,
        "multi_band_diffusion": bool(form.multi_band_diffusion),
        "normalization_strategy": form.normalization_strategy,
        "top_k": form.top_k,
        "top_p": form.top_p,
        "temperature": form.temperature,
        "classifier_free_guidance": form.classifier_free_guidance,
        "output_format": form.output_format,
        # An emptied seed box gives "" (not a number): a random seed then.
        "seed": form.seed if not form.random_seed and _is_number(form.seed) else None,
        **{name: form.extras.get(name, BY_NAME[name].default) for name in EXTRA_INPUTS},
    }


# -- which controls apply ---------------------------------------------------------------------


def audio_use_state(has_audio: bool, model_version: str, current: str) -> ControlState:
    """Melody or continuation: only with a clip; text-only models can only continue."""
    if not has_audio:
        return ControlState(False, "Add a clip above to follow it as a melody or continue it.")
    if model_version not in MELODY_MODELS:
        return ControlState(
            False,
            f"{model_version} can't follow a melody, so the clip will be continued. "
            "Pick a melody model to follow it as a melody instead.",
            USE_CONTINUATION,
            force_value=current != USE_CONTINUATION,
        )
    return ControlState(
        True,
        "Melody: the new music follows the clip's tune. Continue: the result starts with "
        "(part of) your clip and carries on from it.",
    )


def continuation_state(has_audio: bool, continuing: bool, clip_seconds: float | None) -> str:
    """Why start/end are disabled, or how to use them; empty reason means usable."""
    if not has_audio:
        return "Only for continuing a clip: add a clip first."
    if not continuing:
        return "Only when continuing the clip (not when following it as a melody)."
    if clip_seconds and not start_choosable(clip_seconds):
        return (
            f"Your clip is only {clip_seconds:.1f} s long, so it is continued from its start; "
            "Duration must be longer than the clip."
        )
    if clip_seconds:
        return (
            f"Which part of your {clip_seconds:.1f} s clip to continue from; the result starts "
            "with it, so Duration must be longer than that part."
        )
    return "Which part of your clip to continue from."


def continuation_enabled(has_audio: bool, continuing: bool) -> bool:
    return has_audio and continuing


def mbd_state(model_version: str) -> ControlState:
    """Multi-band diffusion exists only for the mono models."""
    if model_version in STEREO_MODELS:
        return ControlState(
            False,
            f"Not available for {model_version}: multi-band diffusion only works with the mono "
            "models (melody-large, large).",
            False,
            force_value=True,
        )
    return ControlState(
        True, "A slower decoder that can sound cleaner (mono models only). Off by default."
    )


def duration_limits(long_mode: bool, value: float) -> tuple[int, float, str]:
    """(slider maximum, value clamped into it, help line) for the duration slider."""
    if long_mode:
        return (
            LONG_MAX_SECONDS,
            value,
            f"Length of the result in seconds ({DURATION_MIN}–{LONG_MAX_SECONDS}). In "
            "continuation mode it includes the part of your clip.",
        )
    return (
        COHERENT_MAX_SECONDS,
        min(value, COHERENT_MAX_SECONDS),
        f"Length of the result in seconds ({DURATION_MIN}–{COHERENT_MAX_SECONDS}). In "
        "continuation mode it includes the part of your clip.",
    )


LONG_WARNING = (
    f"Longer than {COHERENT_MAX_SECONDS} s: MusicGen writes such pieces in overlapping "
    f"{COHERENT_MAX_SECONDS}-second windows, so they take noticeably longer and the music can "
    "drift (less coherent over its whole length)."
)


def clip_bounds(clip_seconds: float | None) -> tuple[int, int]:
    """(start slider maximum, end slider maximum) in whole seconds for a clip of this length.

    Both are at least 1: a slider's maximum must stay above its minimum (0), so a clip of 1 s
    or less keeps a 0–1 range and its start is held at 0 instead (see `start_choosable`).
    """
    if not clip_seconds:
        return (COHERENT_MAX_SECONDS, COHERENT_MAX_SECONDS)
    end_max = max(1, math.ceil(clip_seconds - 1e-6))
    return (max(1, _last_start(clip_seconds)), end_max)


def _last_start(clip_seconds: float) -> int:
    """The latest whole-second start that leaves enough of the clip to continue."""
    return math.floor(clip_seconds - CONTINUE_MIN_SECONDS + 1e-9)


def start_choosable(clip_seconds: float | None) -> bool:
    """Whether a start after 0 exists: starts are whole seconds, and the part of the clip
    after one must be long enough to continue (services.validation.CONTINUE_MIN_SECONDS)."""
    return not clip_seconds or _last_start(clip_seconds) >= 1


def random_seed_value() -> int:
    """A seed a musician can write down (the dice button)."""
    return random.randint(1, 999_999)


def continue_plan(clip_seconds: float | None) -> tuple[int, int]:
    """(continuation start, duration) for "continue this": the clip's last seconds, then more."""
    seconds = clip_seconds or 0.0
    start = max(0, math.floor(seconds) - CONTINUE_TAIL_SECONDS)
    piece = seconds - start
    duration = min(COHERENT_MAX_SECONDS, math.ceil(piece) + CONTINUE_NEW_SECONDS)
    return start, duration


def melody_model_for(model_version: str) -> str:
    """The melody model of the same kind (stereo or mono), for "use as melody"."""
    return MELODY_COUNTERPART.get(model_version, model_version)
