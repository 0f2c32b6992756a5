"""The model's own rules for a request, which need the whole request and the clip's length.

Values are parsed and held to the studio's limits by the request itself
(`GenerationRequest.parse`, declared in `services.musicgen`); the rules here are about which
inputs go together, which model can do what, and where the continued part of a clip lies.
Every refusal is a `FieldError` naming the model input and saying, in a musician's words, what
to change; all of them come at once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from services.audio import CLIP_MAX_SECONDS, too_large_message, too_long_message
from services.errors import FieldError, RequestInvalid
from services.musicgen import (
    BY_NAME,
    COHERENT_MAX_SECONDS,
    LIMITS,
    MELODY_MODELS,
    MODEL_VERSIONS,
    STEREO_MODELS,
    GenerationRequest,
)
from services.replicate.files import MAX_UPLOAD_BYTES

# A clip's measured length is fractional while the end is whole seconds: an end less than a
# second past the clip's end just means "up to the end" to the model, so it is not refused.
END_SLACK_SECONDS = 1.0

_MELODY_CHOICES = " or ".join(sorted(MELODY_MODELS, reverse=True))
_MONO_MODELS = ", ".join(m for m in MODEL_VERSIONS if m not in STEREO_MODELS)


# -- the model's own rules -----------------------------------------------------------------


def _secs(seconds: float) -> str:
    """Seconds for a message: 10 -> "10", 9.46 -> "9.46"."""
    return f"{seconds:.2f}".rstrip("0").rstrip(".")


def _pairing_errors(request: GenerationRequest, skip: frozenset[str]) -> list[FieldError]:
    """Rules about which inputs go together."""
    errors: list[FieldError] = []
    has_audio = bool(request.input_audio)
    if not request.prompt.strip() and not has_audio and not skip & {"prompt", "input_audio"}:
        errors.append(
            FieldError(
                "prompt",
                "Describe the music you want in the prompt, or give an input audio clip to "
                "follow or continue: the model needs at least one of them.",
            )
        )
    if request.continuation and not has_audio and not skip & {"continuation", "input_audio"}:
        errors.append(
            FieldError(
                "input_audio",
                "Continuation extends an input audio clip, but none was given: add a clip, "
                "or turn Continuation off.",
            )
        )
    return errors


def replicate_model_errors(
    request: GenerationRequest, skip: frozenset[str] = frozenset()
) -> list[FieldError]:
    """The rules of meta/musicgen's four models: which can follow a melody, which take MBD."""
    errors: list[FieldError] = []
    if request.model_version not in MODEL_VERSIONS and "model_version" not in skip:
        # A request built in code (a composition's part) may name another engine's model.
        rule = BY_NAME["model_version"].rule(MODEL_VERSIONS)
        asked = f"(this request asks for {request.model_version})."
        return [FieldError("model_version", f"{rule} {asked}")]
    melody = bool(request.input_audio) and not request.continuation
    if (
        melody
        and request.model_version not in MELODY_MODELS
        and not skip & {"model_version", "continuation", "input_audio"}
    ):
        errors.append(
            FieldError(
                "model_version",
                f"The {request.model_version} model can't follow a melody. To use your clip as "
                f"a melody, pick {_MELODY_CHOICES}; to extend the clip instead, turn "
                "Continuation on.",
            )
        )
    if (
        request.multi_band_diffusion
        and request.model_version in STEREO_MODELS
        and not skip & {"multi_band_diffusion", "model_version"}
    ):
        errors.append(
            FieldError(
                "multi_band_diffusion",
                f"Multi-band diffusion only works with the mono models ({_MONO_MODELS}), and "
                f"{request.model_version} is stereo. Turn multi-band diffusion off, or pick "
                "a mono model.",
            )
        )
    return errors


def _clip_errors(
    request: GenerationRequest, audio_seconds: float | None, skip: frozenset[str]
) -> list[FieldError]:
    """Rules about the clip's size and length, and the part of it the model uses."""
    if not request.input_audio or "input_audio" in skip:
        return []  # without a clip the model ignores start and end
    too_much = _clip_limit_errors(request.input_audio, audio_seconds)
    if too_much:
        return too_much  # where start and end fall in a clip that can't be sent is moot
    errors: list[FieldError] = []
    start, end = request.continuation_start, request.continuation_end
    bounds_known = not skip & {"continuation_start", "continuation_end"}
    if bounds_known and end is not None and start >= end:
        errors.append(
            FieldError(
                "continuation_start",
                f"Continuation start ({start} s) must come before continuation end ({end} s): "
                "the model uses the part of your clip between them. Lower the start, raise "
                "the end, or leave the end empty to use the clip up to its end.",
            )
        )
    if audio_seconds is not None:
        clip = _secs(audio_seconds)
        if "continuation_start" not in skip and start >= audio_seconds:
            errors.append(
                FieldError(
                    "continuation_start",
                    f"Continuation start ({start} s) is at or past the end of your clip, which "
                    f"is only {clip} s long. Pick a start below {clip} s.",
                )
            )
        if (
            "continuation_end" not in skip
            and end is not None
            and end >= audio_seconds + END_SLACK_SECONDS
        ):
            errors.append(
                FieldError(
                    "continuation_end",
                    f"Continuation end ({end} s) is past the end of your clip, which is only "
                    f"{clip} s long. Pick an end of at most {math.ceil(audio_seconds)} s, or "
                    "leave it empty to use the clip up to its end.",
                )
            )
    if request.continuation and bounds_known and "duration" not in skip:
        errors.extend(_slice_errors(request, audio_seconds))
    return errors


def _clip_limit_errors(path: str, audio_seconds: float | None) -> list[FieldError]:
    """A clip above the size limit, or lasting (as decoded) more than the longest allowed."""
    try:
        size = os.stat(path).st_size
    except (OSError, ValueError):
        size = None  # not on this server (yet): its size is checked where it is read
    if size is not None and size > MAX_UPLOAD_BYTES:
        return [FieldError("input_audio", too_large_message(size, MAX_UPLOAD_BYTES))]
    if audio_seconds is not None and not LIMITS["input_audio"].allows(audio_seconds):
        return [FieldError("input_audio", too_long_message(CLIP_MAX_SECONDS))]
    return []


def _slice_errors(request: GenerationRequest, audio_seconds: float | None) -> list[FieldError]:
    """In continuation mode `duration` is the total length, so it must exceed the slice."""
    start, end = request.continuation_start, request.continuation_end
    if end is not None and audio_seconds is not None:
        stop = min(float(end), audio_seconds)
    elif end is not None:
        stop = float(end)
    elif audio_seconds is not None:
        stop = audio_seconds
    else:
        return []  # neither an end nor the clip's length: nothing to measure
    piece = stop - start
    if piece <= 0 or piece < request.duration:
        return []  # an empty slice is refused by the start/end rules already
    where = f"from {start} s to " + (f"{end} s" if end is not None else "the end of the clip")
    at_least = math.floor(piece) + 1
    return [
        FieldError(
            "duration",
            f"In continuation mode, Duration is the total length of the result, including the "
            f"{_secs(piece)} s of your clip that it continues ({where}), so {request.duration} "
            f"s leaves no room for new music. Set Duration above {_secs(piece)} s (for example "
            f"{at_least + 8} s adds about 8 s of new music), or use a shorter part of the clip "
            "with continuation start and end.",
        )
    ]


EngineRules = Callable[[GenerationRequest, frozenset[str]], list[FieldError]]


def _rule_errors(
    request: GenerationRequest,
    audio_seconds: float | None,
    skip: frozenset[str] = frozenset(),
    engine_rules: EngineRules = replicate_model_errors,
) -> list[FieldError]:
    """The model's rules, leaving out any that depend on a field in `skip` (already refused)."""
    return (
        _pairing_errors(request, skip)
        + engine_rules(request, skip)
        + _clip_errors(request, audio_seconds, skip)
    )


def check_request(
    request: GenerationRequest,
    audio_seconds: float | None,
    engine_rules: EngineRules = replicate_model_errors,
) -> list[FieldError]:
    """The model's own rules; `audio_seconds` is the input clip's measured length, if any.

    Rules about the clip's length are skipped when its length is unknown (None).
    `engine_rules` are those of the engine that will run it (Replicate's by default).
    """
    return _rule_errors(request, audio_seconds, engine_rules=engine_rules)


def validate(
    raw_or_request: Mapping[str, Any] | GenerationRequest, audio_seconds: float | None = None
) -> GenerationRequest:
    """Parse (if needed) and check; raises one RequestInvalid listing every problem.

    A refused value's field takes its default for the rules, which then leave out any rule
    built on that field (it would only repeat the refusal in other words).
    """
    errors: list[FieldError] = []
    if isinstance(raw_or_request, GenerationRequest):
        request = raw_or_request
    else:
        try:
            request = GenerationRequest.parse(raw_or_request)
        except RequestInvalid as refused:
            errors = list(refused.errors)
            kept = {k: v for k, v in raw_or_request.items() if not refused.for_field(k)}
            request = GenerationRequest.parse(kept)
    errors += _rule_errors(request, audio_seconds, frozenset(e.field for e in errors))
    if errors:
        raise RequestInvalid(errors)
    return request


# -- warnings (allowed, but the musician should know) ---------------------------------------


def is_long(request: GenerationRequest) -> bool:
    """Above 30 s MusicGen writes in overlapping windows: slower and less coherent."""
    return request.duration > COHERENT_MAX_SECONDS


def warnings(request: GenerationRequest) -> list[str]:
    """Things that are allowed but worth knowing before pressing Generate."""
    notes: list[str] = []
    if is_long(request):
        notes.append(
            f"Duration is {request.duration} s. Above {COHERENT_MAX_SECONDS} s MusicGen writes "
            f"the piece in overlapping {COHERENT_MAX_SECONDS}-second windows, so it takes "
            "noticeably longer and the music can drift (less coherent over its whole length)."
        )
    return notes
