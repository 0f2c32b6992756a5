"""Validation of a generation request, before anything is sent.

Two layers: `parse_request` turns loose form/API values into a typed `GenerationRequest`
(types, ranges, choices); `check_request` applies the model's own rules, which need the
whole request and the input clip's real length. Every refusal is a `FieldError` naming the
model input and saying, in a musician's words, what to change; all of them come at once.
The limits, the parsing of each field and its message come from the fields' declaration in
`services.musicgen`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from services.audio import CLIP_MAX_SECONDS, too_large_message, too_long_message
from services.errors import FieldError, RequestInvalid
from services.musicgen import (
    COHERENT_MAX_SECONDS,
    GUIDANCE_MAX,
    INPUTS,
    MELODY_MODELS,
    MODEL_VERSIONS,
    PROMPT_MAX_CHARS,
    SEED_MAX,
    STEREO_MODELS,
    TEMPERATURE_MAX,
    TOP_K_MAX,
    GenerationRequest,
    InputField,
    Limit,
)
from services.replicate.files import MAX_UPLOAD_BYTES

__all__ = [
    "CHOICES",
    "CLIP_MAX_BYTES",
    "CLIP_MAX_SECONDS",
    "DURATION_MAX",
    "DURATION_MIN",
    "GUIDANCE_MAX",
    "LIMITS",
    "PROMPT_MAX_CHARS",
    "SEED_MAX",
    "TEMPERATURE_MAX",
    "TEMPERATURE_MIN",
    "TOP_K_MAX",
    "TOP_P_MAX",
    "Limit",
    "check_request",
    "is_long",
    "limit_errors",
    "parse_request",
    "replicate_model_errors",
    "validate",
    "warnings",
]

# -- the limits: one table for the page's controls, the `/generate` API and the rules below ----
# Every request is checked against them before anything is sent (and paid for). They are the
# studio's own limits declared on each field of `GenerationRequest`.

LIMITS: Mapping[str, Limit] = MappingProxyType(
    {spec.name: spec.limit for spec in INPUTS if spec.limit is not None}
)
# The fields that take one of a few words.
CHOICES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {spec.name: spec.choices for spec in INPUTS if spec.choices}
)
DURATION_MIN = int(LIMITS["duration"].low)
DURATION_MAX = int(LIMITS["duration"].high)
TOP_P_MAX = LIMITS["top_p"].high
TEMPERATURE_MIN = LIMITS["temperature"].low  # excluded: the temperature must be above it
# An input clip: measured by decoding (services.audio), never by what its header claims.
CLIP_MAX_BYTES = MAX_UPLOAD_BYTES
# A clip's measured length is fractional while the end is whole seconds: an end less than a
# second past the clip's end just means "up to the end" to the model, so it is not refused.
END_SLACK_SECONDS = 1.0

# MusicGen hears audio as EnCodec frames, 50 a second (640 samples at 32 kHz): a part of a clip
# to continue shorter than one frame encodes to nothing, and the run fails after its create.
CONTINUE_MIN_SECONDS = 1 / 50

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_MELODY_CHOICES = " or ".join(sorted(MELODY_MODELS, reverse=True))
_MONO_MODELS = ", ".join(m for m in MODEL_VERSIONS if m not in STEREO_MODELS)


class _Refused(ValueError):
    """A value that cannot be used for its field."""


# -- coercion of loose values ---------------------------------------------------------------


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _whole(value: Any) -> int:
    """A whole number from an int, an integral float (8.0) or a string ("8", "8.0")."""
    if isinstance(value, bool):
        raise _Refused
    if isinstance(value, int):
        return value
    number = _number(value)
    if not number.is_integer():
        raise _Refused
    return int(number)


def _number(value: Any) -> float:
    """A finite number from an int, a float or a numeric string."""
    if isinstance(value, bool):
        raise _Refused
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            raise _Refused from None
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _Refused from None
    else:
        raise _Refused
    if not math.isfinite(number):
        raise _Refused
    return number


def _flag(value: Any) -> bool:
    """A switch from a bool, 0/1 or the usual words ("true", "off", ...)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise _Refused


def _text(limit: Limit | None) -> Callable[[Any], str]:
    """Text, at most `limit.high` characters long."""

    def parse(value: Any) -> str:
        if not isinstance(value, str) or (limit is not None and len(value) > limit.high):
            raise _Refused
        return value

    return parse


def _path(value: Any) -> str:
    """A local file path; Gradio may also hand over a file dict with a `path`."""
    if isinstance(value, Mapping):
        value = value.get("path") or value.get("name")
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise _Refused
    return value


def _choice(options: tuple[str, ...] | Mapping[str, str]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.strip().lower() not in options:
            raise _Refused
        return value.strip().lower()

    return parse


def _within(spec: InputField) -> Callable[[Any], int | float | None]:
    """A number in the field's limit: whole (an int) or not (a float); or None for a number
    that means "none" to the model (a seed of -1 or 0: random; an end of -1: to the end)."""
    limit = spec.limit

    def parse(value: Any) -> int | float | None:
        number: int | float = _whole(value) if spec.kind == "whole" else _number(value)
        if number in spec.input.none_values:
            return None
        if limit is not None and not limit.allows(number):
            raise _Refused
        return number

    return parse


# -- what each field accepts, and how a refusal reads ---------------------------------------


@dataclass(frozen=True)
class _Field:
    parse: Callable[[Any], Any]
    rule: str  # "<Label> must be ...", completed with "(you entered X)."
    hint: str = ""
    empty_is_none: bool = False  # empty means None (random seed, end of clip), else the default


def _oneof(options: tuple[str, ...] | Mapping[str, str]) -> str:
    names = list(options)
    return ", ".join(names[:-1]) + " or " + names[-1]


def _field(spec: InputField) -> _Field:
    """How a field's loose value is read and its refusal worded, from its declaration."""
    parse: Callable[[Any], Any]
    if spec.kind == "text":
        parse = _text(spec.limit)
        rule = f"{spec.label} must be text"
        if spec.limit is not None:
            rule += f" of at most {spec.limit.high:g} characters"
    elif spec.kind == "file":
        parse, rule = _path, f"{spec.label} must be an audio file"
    elif spec.kind == "switch":
        parse, rule = _flag, f"{spec.label} must be on or off (true or false)"
    elif spec.kind == "choice":
        parse, rule = _choice(spec.choices), f"{spec.label} must be {_oneof(spec.choices)}"
    else:
        parse = _within(spec)
        number = "a whole number" if spec.kind == "whole" else "a number"
        rule = f"{spec.label} must be {spec.limit.words() if spec.limit else number}"
    return _Field(parse, rule, spec.input.hint, empty_is_none=spec.optional)


_FIELDS: dict[str, _Field] = {spec.name: _field(spec) for spec in INPUTS}
_PER_ENGINE = frozenset(spec.name for spec in INPUTS if spec.input.per_engine)
_DEFAULTS: dict[str, Any] = {spec.name: spec.default for spec in INPUTS}


def _shown(value: Any) -> str:
    """The value as the user typed it, short enough to quote in a message."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 64 else "a far too large number"
    if isinstance(value, str):
        if len(value) <= 40:
            return f'"{value}"'
        return f'{len(value)} characters: "{value[:37]}..."'
    return f"a {type(value).__name__}"


def _engine_field(name: str, models: Mapping[str, str]) -> _Field:
    """`model_version` accepts the models of the engine that will run the request."""
    spec = _FIELDS[name]
    if models is MODEL_VERSIONS:
        return spec
    label = next(s.label for s in INPUTS if s.name == name)
    return _Field(_choice(models), f"{label} must be {_oneof(models)}", spec.hint)


def _parse(
    raw: Mapping[str, Any],
    models: Mapping[str, str] = MODEL_VERSIONS,
    default_model: str | None = None,
) -> tuple[GenerationRequest, list[FieldError]]:
    """The request with defaults in place of refused values, and the refusals."""
    values: dict[str, Any] = {}
    errors: list[FieldError] = []
    defaults = dict(_DEFAULTS)
    if default_model is not None:
        defaults.update(dict.fromkeys(_PER_ENGINE, default_model))
    for name, spec in _FIELDS.items():
        if name in _PER_ENGINE:
            spec = _engine_field(name, models)
        value = raw.get(name)
        if _is_empty(value):
            values[name] = None if spec.empty_is_none else defaults[name]
            continue
        try:
            values[name] = spec.parse(value)
        except _Refused:
            values[name] = defaults[name]
            message = f"{spec.rule} (you entered {_shown(value)})."
            errors.append(FieldError(name, f"{message} {spec.hint}" if spec.hint else message))
    return GenerationRequest(**values), errors


def parse_request(
    raw: Mapping[str, Any],
    *,
    models: Mapping[str, str] = MODEL_VERSIONS,
    default_model: str | None = None,
) -> GenerationRequest:
    """Build a request from a form's or the API's loose values.

    Empty values (None, "") take the model's default; for `seed` and `continuation_end`
    that is None (random, to the end of the clip). `models` are the engine's model choices and
    `default_model` its default. Raises RequestInvalid listing every problem.
    """
    request, errors = _parse(raw, models, default_model)
    if errors:
        raise RequestInvalid(errors)
    return request


def limit_errors(
    request: GenerationRequest, models: Mapping[str, str] = MODEL_VERSIONS
) -> list[FieldError]:
    """A typed request's values outside the limits: one built in code was never parsed.

    The same refusals `parse_request` gives for the same values.
    """
    return _parse(request.to_dict(), models)[1]


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
    if request.continuation and bounds_known and not errors:
        errors.extend(_too_short_errors(request, audio_seconds))
    if request.continuation and bounds_known and "duration" not in skip:
        errors.extend(_slice_errors(request, audio_seconds))
    return errors


def _too_short_errors(request: GenerationRequest, audio_seconds: float | None) -> list[FieldError]:
    """A clip (or the part of it between start and end) too short for the model to continue."""
    if audio_seconds is None:
        return []
    if audio_seconds < CONTINUE_MIN_SECONDS:
        return [
            FieldError(
                "input_audio",
                f"This clip lasts only {audio_seconds * 1000:.1f} ms: too short to continue. "
                "The model hears audio in steps of 20 ms, so give a clip of at least that (a "
                "few seconds make a musical start).",
            )
        ]
    end = audio_seconds if request.continuation_end is None else request.continuation_end
    piece = min(float(end), audio_seconds) - request.continuation_start
    if 0 < piece < CONTINUE_MIN_SECONDS:
        return [
            FieldError(
                "continuation_start",
                f"From continuation start ({request.continuation_start} s) your clip has only "
                f"{piece * 1000:.1f} ms left: too short to continue (the model hears audio in "
                "steps of 20 ms). Pick an earlier start.",
            )
        ]
    return []


def _clip_limit_errors(path: str, audio_seconds: float | None) -> list[FieldError]:
    """A clip above the size limit, or lasting (as decoded) more than the longest allowed."""
    try:
        size = os.stat(path).st_size
    except (OSError, ValueError):
        size = None  # not on this server (yet): its size is checked where it is read
    if size is not None and size > CLIP_MAX_BYTES:
        return [FieldError("input_audio", too_large_message(size, CLIP_MAX_BYTES))]
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
    """Parse (if needed) and check; raises one RequestInvalid listing every problem."""
    raw = (
        raw_or_request.to_dict()
        if isinstance(raw_or_request, GenerationRequest)
        else raw_or_request
    )
    request, errors = _parse(raw)
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
