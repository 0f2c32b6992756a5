"""The form's rules without Gradio: what each control may do given the others, and the request.

Every control that cannot apply is disabled and says why; `request_values` turns the form into
the loose values `GenerationService.prepare` validates (it refuses what the form lets through),
and `page_values` a past request back into the form. Both go by the schema's fields: only the
inputs these rules read are named.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from services.musicgen import (
    COHERENT_MAX_SECONDS,
    DURATION_MAX,
    INPUT_NAMES,
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


@dataclass(frozen=True)
class FormValues:
    """The form as the page holds it: one value per model input, by the input's name, in the
    schema's order, then the page's own switches (which change how some inputs are read).

    Each input's value is the request's own, except where the page shows it another way
    (`page_values`): "continuation" is the "Use the clip as" choice (`USE_MELODY` or
    `USE_CONTINUATION`).
    """

    inputs: Mapping[str, Any] = field(
        default_factory=lambda: page_values(GenerationRequest()).inputs
    )
    long_mode: bool = False  # "Longer than 30 s": the duration slider reaches DURATION_MAX
    to_end: bool = True  # "Until the end of the clip": no continuation_end is sent
    random_seed: bool = True  # "Random seed": no seed is sent

    @classmethod
    def of(cls, **values: Any) -> FormValues:
        """The page's starting values with `values` changed, inputs and switches by name."""
        switches = set(switch_names())
        start = cls()
        inputs = {k: v for k, v in values.items() if k not in switches}
        unknown = set(inputs) - set(INPUT_NAMES)
        if unknown:
            raise TypeError(f"not an input of the model or a switch of the page: {unknown}")
        changed = {k: v for k, v in values.items() if k in switches}
        return replace(start, inputs={**start.inputs, **inputs}, **changed)

    def ordered(self) -> list[Any]:
        """The values in the order of `Form.components` (the handlers' input list)."""
        return in_form_order(self)


def switch_names() -> tuple[str, ...]:
    """The page's own switches (long mode, to the end, random seed), as FormValues and Form
    both name them."""
    return tuple(f.name for f in fields(FormValues) if f.name != "inputs")


def in_form_order(holder: Any) -> list[Any]:
    """`holder`'s inputs in schema order, then its switches: the handlers' input list. A Form
    (its components) and a FormValues (their values) hold them under the same names."""
    switches = [getattr(holder, name) for name in switch_names()]
    return [*(holder.inputs[name] for name in INPUT_NAMES), *switches]


def form_values(components: Sequence[Any]) -> FormValues:
    """The handler's inputs (the form's components' values, in `Form.components` order)."""
    count = len(INPUT_NAMES)
    inputs = dict(zip(INPUT_NAMES, components[:count], strict=True))
    return FormValues(inputs, *components[count:])


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def request_values(form: FormValues) -> dict[str, Any]:
    """The loose request values for `GenerationService.prepare` (named as the model names them).

    Every input goes as its control holds it, but for the few the page's rules read: fields that
    cannot apply are left at the model's defaults so they never cause a refusal (start/end
    without a clip to continue, a fixed seed while "random" is ticked).
    """
    values = dict(form.inputs)
    has_audio = bool(values["input_audio"])
    continuing = has_audio and values["continuation"] == USE_CONTINUATION
    seed = values["seed"]
    values.update(
        prompt=values["prompt"] or "",
        input_audio=values["input_audio"] or None,
        continuation=continuing,
        continuation_start=values["continuation_start"] if continuing else 0,
        continuation_end=None if not continuing or form.to_end else values["continuation_end"],
        multi_band_diffusion=bool(values["multi_band_diffusion"]),
        # An emptied seed box gives "" (not a number): a random seed then.
        seed=seed if not form.random_seed and _is_number(seed) else None,
    )
    return values


def page_values(request: GenerationRequest) -> FormValues:
    """The form showing `request` (the inverse of `request_values`): its settings reused."""
    values = request.model_dump()
    values.update(
        continuation=USE_CONTINUATION if request.continuation else USE_MELODY,
        # "Until the end" ticked: the end slider's value is not read.
        continuation_end=(
            COHERENT_MAX_SECONDS if request.continuation_end is None else request.continuation_end
        ),
    )
    return FormValues(
        values,
        long_mode=request.duration > COHERENT_MAX_SECONDS,
        to_end=request.continuation_end is None,
        random_seed=request.seed is None,
    )


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
