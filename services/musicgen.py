"""meta/musicgen's inputs, declared once: names, types, defaults, limits, choices and help.

`GenerationRequest` (a frozen pydantic model) is the single source of truth. Each field carries
- the model's own constraints (what Replicate and cog-musicgen accept: its type, `ge=...` on
  the `Field`, a `Literal` or `Input.choices` for words), which `replicate_input_schema` turns
  into the model's Replicate-style input JSON schema;
- the studio's stricter limit (`Input.limit`), checked before anything is sent;
- the musician's help (`description`) and how the field reads in messages and on the page
  (`Input`: label, hint, page label and help line, slider step).
The model validates: loose values from a form or the API are coerced by pydantic, the studio's
limits are checked on every construction, and `GenerationRequest.parse` turns a refusal into
one `FieldError` per field, worded from the field's declaration. The API's parameters and their
help, the page's controls, its handlers' values and "Reuse settings", and the emulator's own
input check are all derived from these fields (`INPUTS`): adding an input is one edit here (plus,
at most, its place in the page's layout, `ui.inputs.build_form`).
"""

from __future__ import annotations

import os
import types
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from services.audio import CLIP_MAX_SECONDS
from services.errors import FieldError, RequestInvalid

MODEL_VERSIONS: Mapping[str, str] = {
    "stereo-melody-large": "Stereo, can follow a melody",
    "stereo-large": "Stereo, text only",
    "melody-large": "Mono, can follow a melody",
    "large": "Mono, text only",
}
MELODY_MODELS = frozenset({"stereo-melody-large", "melody-large"})
STEREO_MODELS = frozenset({"stereo-melody-large", "stereo-large"})
NormalizationStrategy = Literal["loudness", "clip", "peak", "rms"]
OutputFormat = Literal["wav", "mp3"]
NORMALIZATION_STRATEGIES: tuple[str, ...] = get_args(NormalizationStrategy)
OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)
# Above this, audiocraft generates in overlapping 30 s windows: slower and less coherent.
COHERENT_MAX_SECONDS = 30

# -- the studio's limits, stricter than the model's own ----------------------------------------
DURATION_MAX = 300  # seconds: five minutes of music is already a long, slow run
# MusicGen's tokens come from a codebook of 2048 entries (above that the model crashes); past
# the likeliest thousand, top-k no longer changes what you hear.
TOP_K_MAX = 1000
TEMPERATURE_MAX = 5.0  # and above 0
GUIDANCE_MAX = 20
PROMPT_MAX_CHARS = 1000
# The model seeds numpy, which takes 0 .. 2**32 - 1; 0 and -1 both mean "random" to the model.
SEED_MAX = 2**32 - 1


def _plain(number: float) -> str:
    """A limit as written by hand: 300, 4294967295, 0.5 (never 4.29497e+09)."""
    return str(int(number)) if float(number).is_integer() else format(number, "g")


@dataclass(frozen=True)
class Limit:
    """A field's allowed values: from `low` to `high` (`low` itself excluded if `low_open`)."""

    low: float
    high: float
    whole: bool = True
    low_open: bool = False
    unit: str = ""  # "s" for seconds, "characters" for text

    def allows(self, number: float) -> bool:
        above = number > self.low if self.low_open else number >= self.low
        return above and number <= self.high

    def words(self) -> str:
        """The range as a musician reads it: "a whole number of seconds from 1 to 300"."""
        low, high = _plain(self.low), _plain(self.high)
        kind = "a whole number" if self.whole else "a number"
        if self.unit == "s":
            kind += " of seconds"
        if self.low_open:
            return f"{kind} above {low} and at most {high}"
        return f"{kind} from {low} to {high}"


@dataclass(frozen=True)
class Input:
    """What the studio adds to one of the model's inputs (attached with `Annotated`)."""

    label: str  # in messages: "<label> must be ..."
    limit: Limit | None = None  # the studio's own limit (for text: its length; for a file: seconds)
    hint: str = ""  # after a refusal: what to do instead
    none_values: tuple[int, ...] = ()  # numbers that mean "none" (a seed of -1 or 0: random)
    choices: tuple[str, ...] = ()  # the model's words, when the type is a plain `str`
    # The engine that runs the request decides the choices and the default (a local engine
    # takes checkpoint ids): `choices` are Replicate's.
    per_engine: bool = False
    file: bool = False  # a local file here; sent to the model as a URI
    page_label: str = ""  # the page's label, when it differs from `label`
    page_info: str = ""  # the page's help line, when it differs from the description
    step: float = 1  # the page's slider step


Kind = Literal["text", "file", "whole", "number", "switch", "choice"]


class GenerationRequest(BaseModel):
    """One run's inputs, named exactly as the model names them, in the API's order.

    `input_audio` is a local file path (the service uploads it); `seed` None means random.
    Construction checks the model's own constraints and the studio's limits, whether the values
    came from a form or from code; `parse` reads loose values and words each refusal.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    prompt: Annotated[
        str,
        Input(
            "Prompt",
            Limit(0, PROMPT_MAX_CHARS, unit="characters"),
            "Describe the music in fewer words: genre, instruments, mood and tempo say the most.",
            page_info="Describe the music: genre, instruments, mood, tempo. "
            "Ctrl/Cmd+Enter generates.",
        ),
    ] = Field("", description="Describe the music: genre, instruments, mood, tempo.")
    input_audio: Annotated[
        str | None,
        Input(
            "Input audio",
            Limit(0, CLIP_MAX_SECONDS, whole=False, unit="s"),  # the clip's measured length
            "Choose the file again.",
            file=True,
            page_label="Input audio (optional): a melody to follow or a clip to continue",
        ),
    ] = Field(None, description="An audio file: a melody to follow, or a clip to continue.")
    duration: Annotated[
        int,
        Input(
            "Duration",
            Limit(1, DURATION_MAX, unit="s"),
            "8 s is the model's default.",
            page_label="Duration (seconds)",
        ),
    ] = Field(
        8,
        description="Length of the result in seconds (with continuation: including the clip).",
    )
    continuation: Annotated[bool, Input("Continuation")] = Field(
        False,
        description="True: the result continues input_audio; false: it follows its melody.",
    )
    continuation_start: Annotated[
        int,
        Input(
            "Continuation start",
            # Within the clip (checked against its measured length), so never past the longest.
            Limit(0, CLIP_MAX_SECONDS, unit="s"),
            "0 starts at the beginning of the clip.",
            page_label="Continue from (s)",
        ),
    ] = Field(0, ge=0, description="Where in the clip the part to continue starts, in seconds.")
    continuation_end: Annotated[
        int | None,
        Input(
            "Continuation end",
            Limit(0, CLIP_MAX_SECONDS, unit="s"),
            "Leave it empty to use the clip up to its end.",
            # The model's text says "-1 means end", but its schema's ge=0 refuses -1: the
            # studio takes -1 (or nothing) as "to the end" and then sends no end at all.
            none_values=(-1,),
            page_label="Continue until (s)",
            page_info="The part of the clip ends here.",
        ),
    ] = Field(
        None, ge=0, description="Where that part ends, in seconds; empty: the end of the clip."
    )
    model_version: Annotated[
        str,
        Input(
            "Model",
            choices=tuple(MODEL_VERSIONS),
            per_engine=True,
            page_info="All are the large (3.3B) MusicGen. Stereo sounds wider; melody models "
            "can also follow a tune you give them.",
        ),
    ] = Field(
        "stereo-melody-large",
        description="Which MusicGen: on Replicate one of its four models; on this machine a "
        "Hugging Face checkpoint id. Empty: the engine's default.",
    )
    multi_band_diffusion: Annotated[bool, Input("Multi-band diffusion")] = Field(
        False, description="Decode with multi-band diffusion (Replicate's mono models only)."
    )
    normalization_strategy: Annotated[
        NormalizationStrategy,
        Input("Normalization", page_info="How the result's level is set."),
    ] = Field("loudness", description="How the result's level is evened out.")
    output_format: Annotated[
        OutputFormat,
        Input("Output format", page_info="wav: lossless, larger. mp3: smaller."),
    ] = Field("wav", description="The file format of the result.")
    seed: Annotated[
        int | None,
        Input(
            "Seed",
            Limit(1, SEED_MAX),  # or empty / -1 / 0: random
            "Leave it empty (or enter -1) for a random seed.",
            none_values=(-1, 0),
            page_info="A whole number; the same seed and settings give the same music.",
        ),
    ] = Field(None, description="Fix it to make the same take again; empty or -1: a random seed.")
    temperature: Annotated[
        float,
        Input(
            "Temperature",
            Limit(0.0, TEMPERATURE_MAX, whole=False, low_open=True),
            "1 is the model's default; lower is more predictable, higher more adventurous.",
            page_info="Lower: more predictable; higher: more adventurous. Default 1.",
            step=0.05,
        ),
    ] = Field(1.0, description="Higher is more adventurous, lower more predictable.")
    top_k: Annotated[
        int,
        Input(
            "Top-k",
            Limit(0, TOP_K_MAX),
            "250 is the model's default.",
            page_info="Picks each step among the k likeliest sounds. Lower: safer; higher: "
            "more varied. Default 250.",
        ),
    ] = Field(250, description="Sample from this many likeliest tokens.")
    top_p: Annotated[
        float,
        Input(
            "Top-p",
            Limit(0.0, 1.0, whole=False),
            "0 leaves the choice to top-k.",
            page_info="0 uses top-k. Otherwise picks among the likeliest sounds covering this "
            "share of probability.",
            step=0.01,
        ),
    ] = Field(
        0.0, description="Sample from the likeliest tokens up to this probability; 0: use top_k."
    )
    classifier_free_guidance: Annotated[
        int,
        Input(
            "Classifier-free guidance",
            Limit(0, GUIDANCE_MAX),
            "3 is the model's default; higher follows the prompt more closely.",
            page_label="Guidance",
            page_info="How closely to follow the prompt (classifier-free guidance). Default 3.",
        ),
    ] = Field(3, description="How closely the music follows the prompt.")

    @model_validator(mode="before")
    @classmethod
    def _empties(cls, data: Any, info: ValidationInfo) -> Any:
        """Empty values take the default (None where empty means "none": a random seed, the
        clip up to its end)."""
        if not isinstance(data, Mapping):
            return data
        default_model = (info.context or {}).get("default_model")
        values: dict[str, Any] = {}
        for name, value in data.items():
            spec = BY_NAME.get(name)
            if spec is None or not _is_empty(value):
                values[name] = value
            elif spec.optional:
                values[name] = None
            elif spec.input.per_engine and not (info.context or {}).get("parsing"):
                values[name] = value  # built in code: left empty for the engine's default
        if default_model is not None:  # parsed for an engine: its default, when not given
            for spec in INPUTS:
                if spec.input.per_engine and spec.name not in values:
                    values[spec.name] = default_model
        return values

    @field_validator("*", mode="before")
    @classmethod
    def _loose(cls, value: Any, info: ValidationInfo) -> Any:
        """What pydantic's own coercion leaves to the studio, by the field's kind."""
        return _loosen(BY_NAME[str(info.field_name)], value)

    @field_validator("*", mode="after")
    @classmethod
    def _limits(cls, value: Any, info: ValidationInfo) -> Any:
        """The studio's limits, and the engine's model choices when parsing for one.

        A value already accepted once (a stored row's, one a copy keeps) is `trusted`; text the
        studio wrote itself (`studio_chars`, a loop's tempo) is not the musician's to count."""
        context = info.context or {}
        spec = BY_NAME[str(info.field_name)]
        if value is None or spec.name in context.get("trusted", ()):
            return value
        models = context.get("models")
        if not spec.admits(value, models, extra_chars=context.get("studio_chars", 0)):
            raise ValueError(spec.rule(models))
        return value

    @classmethod
    def parse(
        cls,
        raw: Mapping[str, Any],
        *,
        models: Mapping[str, str] | None = None,
        default_model: str | None = None,
    ) -> GenerationRequest:
        """Build a request from a form's or the API's loose values (unknown keys are ignored).

        Empty values (None, "") take the model's default; for `seed` and `continuation_end`
        that is None (random, to the end of the clip). `models` are the engine's model choices
        and `default_model` its default. Raises RequestInvalid naming every refused field.
        """
        known = {k: v for k, v in raw.items() if k in cls.model_fields}
        models = MODEL_VERSIONS if models is None else models
        context = {"models": models, "default_model": default_model, "parsing": True}
        try:
            return cls.model_validate(known, context=context)
        except ValidationError as err:
            raise RequestInvalid(field_errors(err, known, models)) from None

    @property
    def uses_melody(self) -> bool:
        return bool(self.input_audio) and not self.continuation

    def replace(self, *, studio_chars: int = 0, **changes: Any) -> GenerationRequest:
        """A copy with `changes`, checked like a new request (RequestInvalid if refused); the
        values it keeps were accepted already. `studio_chars` of a new prompt are words the
        studio writes itself (a loop's tempo), not counted against the musician's limit."""
        values = {**self.model_dump(), **changes}
        kept = [name for name in type(self).model_fields if name not in changes]
        context = {"trusted": kept, "studio_chars": studio_chars}
        try:
            return type(self).model_validate(values, context=context)
        except ValidationError as err:
            raise RequestInvalid(field_errors(err, values)) from None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy of every field, for the library and for sidecars."""
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationRequest:
        """Rebuild from `to_dict` output (old library rows too), ignoring unknown keys.

        A stored value this version cannot take (a field's shape changed) falls back to the
        field's default rather than losing the whole row.
        """
        known = {k: v for k, v in data.items() if k in cls.model_fields}
        # A stored request was held to the studio's limits when it was made (limits change).
        context = {"trusted": list(cls.model_fields)}
        try:
            return cls.model_validate(known, context=context)
        except ValidationError as err:
            bad = {str(e["loc"][0]) for e in err.errors() if e["loc"]}
            kept = {k: v for k, v in known.items() if k not in bad}
            return cls.model_validate(kept, context=context)

    def to_api_input(self, audio_uri: str | None = None) -> dict[str, Any]:
        """The prediction's `input`: only the fields that are set.

        `audio_uri` is the uploaded `input_audio` (https or data URL); never sent empty. Empty
        text and None are left out, so the model uses its own default (random seed, the clip
        up to its end).
        """
        payload: dict[str, Any] = {}
        for spec in INPUTS:
            value = audio_uri if spec.input.file else getattr(self, spec.name)
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            payload[spec.name] = value
        return payload


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _means_none(spec: InputField, value: Any) -> bool:
    """A number that means "none" to the model: a seed of -1 or 0, an end of -1 ("-1" too)."""
    if not spec.input.none_values or isinstance(value, bool):
        return False
    try:
        return float(value) in spec.input.none_values
    except (TypeError, ValueError, OverflowError):
        return False


def _loosen(spec: InputField, value: Any) -> Any:
    """A form's or the API's value as pydantic should see it for a field of this kind."""
    if _means_none(spec, value):
        return None
    if spec.kind in ("whole", "number") and isinstance(value, bool):
        raise ValueError("a switch is not a number")
    if spec.kind in ("choice", "switch") and isinstance(value, str):
        return value.strip().lower() if spec.kind == "choice" else value.strip()
    if spec.kind == "file":
        if isinstance(value, Mapping):  # Gradio may hand over a file dict
            value = value.get("path") or value.get("name")
        return os.fspath(value) if isinstance(value, os.PathLike) else value
    if spec.kind == "text" and not isinstance(value, str):
        raise ValueError("not text")
    return value


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


def _oneof(options: tuple[str, ...] | Mapping[str, str]) -> str:
    names = list(options)
    return ", ".join(names[:-1]) + " or " + names[-1]


def field_errors(
    err: ValidationError, raw: Mapping[str, Any], models: Mapping[str, str] | None = None
) -> list[FieldError]:
    """Pydantic's refusals as the studio's: one per field, in the fields' order, each saying
    what the field takes and what was entered."""
    refused = {str(e["loc"][0]) for e in err.errors() if e["loc"]}
    errors: list[FieldError] = []
    for spec in INPUTS:
        if spec.name in refused:
            message = f"{spec.rule(models)} (you entered {_shown(raw.get(spec.name))})."
            hint = spec.input.hint
            errors.append(FieldError(spec.name, f"{message} {hint}" if hint else message))
    unknown = sorted(refused - set(BY_NAME))
    errors += [FieldError(name, f"{name} is not an input of the model.") for name in unknown]
    return errors


# -- the fields, as every layer reads them ------------------------------------------------------


@dataclass(frozen=True)
class InputField:
    """One model input, as read from `GenerationRequest`'s declaration."""

    name: str
    kind: Kind
    default: Any
    description: str
    input: Input
    choices: tuple[str, ...] = ()  # the model's words (Replicate's, for a per-engine field)
    minimum: float | None = None  # the model's own bounds
    maximum: float | None = None
    exclusive_minimum: float | None = None

    @property
    def label(self) -> str:
        return self.input.label

    @property
    def limit(self) -> Limit | None:
        return self.input.limit

    @property
    def page_label(self) -> str:
        return self.input.page_label or self.input.label

    @property
    def page_info(self) -> str:
        return self.input.page_info or self.description

    @property
    def optional(self) -> bool:
        """Empty means "none" (random seed, no clip), not the default."""
        return self.default is None

    def choices_for(self, models: Mapping[str, str] | None) -> tuple[str, ...]:
        """The words this field takes: the engine's models for a per-engine field."""
        if self.input.per_engine and models is not None:
            return tuple(models)
        return self.choices

    def admits(
        self, value: Any, models: Mapping[str, str] | None = None, *, extra_chars: int = 0
    ) -> bool:
        """Whether a typed value lies within the studio's limit (and the engine's choices);
        `extra_chars` of a text are the studio's own, beyond the limit."""
        limit = self.limit
        if self.kind == "text":
            return limit is None or len(value) <= limit.high + extra_chars
        if self.kind in ("whole", "number"):
            return limit is None or limit.allows(value)
        if self.kind == "choice" and (models is not None or not self.input.per_engine):
            return value in self.choices_for(models)
        return True

    def rule(self, models: Mapping[str, str] | None = None) -> str:
        """What the field takes, as a refusal begins: "Duration must be a whole number ..."."""
        limit = self.limit
        if self.kind == "text":
            extra = f" of at most {limit.high:g} characters" if limit is not None else ""
            return f"{self.label} must be text{extra}"
        if self.kind == "file":
            return f"{self.label} must be an audio file"
        if self.kind == "switch":
            return f"{self.label} must be on or off (true or false)"
        if self.kind == "choice":
            return f"{self.label} must be {_oneof(self.choices_for(models))}"
        number = "a whole number" if self.kind == "whole" else "a number"
        return f"{self.label} must be {limit.words() if limit else number}"


def _base_type(annotation: Any) -> Any:
    """`int | None` -> int; anything else as it is."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _input_field(name: str, info: FieldInfo) -> InputField:
    about = next((m for m in info.metadata if isinstance(m, Input)), None)
    if about is None or info.description is None:
        raise TypeError(f"{name}: every model input needs an Input(...) and a description")
    base = _base_type(info.annotation)
    choices = about.choices
    kind: Kind
    if get_origin(base) is Literal:
        kind, choices = "choice", tuple(str(c) for c in get_args(base))
    elif base is bool:
        kind = "switch"
    elif base is int:
        kind = "whole"
    elif base is float:
        kind = "number"
    elif base is str:
        kind = "file" if about.file else "choice" if choices else "text"
    else:
        raise TypeError(f"{name}: no input kind for {base!r}")
    bounds: dict[str, float] = {}
    for item in info.metadata:
        for attr, key in (("ge", "minimum"), ("le", "maximum"), ("gt", "exclusive_minimum")):
            value = getattr(item, attr, None)
            if isinstance(value, int | float):
                bounds[key] = value
    return InputField(
        name=name,
        kind=kind,
        default=info.default,
        description=info.description,
        input=about,
        choices=choices,
        **bounds,
    )


INPUTS: tuple[InputField, ...] = tuple(
    _input_field(name, info) for name, info in GenerationRequest.model_fields.items()
)
INPUT_NAMES: tuple[str, ...] = tuple(spec.name for spec in INPUTS)
BY_NAME: Mapping[str, InputField] = {spec.name: spec for spec in INPUTS}
# The studio's limits and the fields that take one of a few words, for the page and the help.
LIMITS: Mapping[str, Limit] = MappingProxyType(
    {spec.name: spec.limit for spec in INPUTS if spec.limit is not None}
)
CHOICES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {spec.name: spec.choices for spec in INPUTS if spec.choices}
)
DEFAULT_MODEL: str = BY_NAME["model_version"].default


# -- the model's own schema, as Replicate publishes it --------------------------------------------

_JSON_TYPES: Mapping[Kind, str] = {
    "text": "string",
    "file": "string",
    "choice": "string",
    "whole": "integer",
    "number": "number",
    "switch": "boolean",
}


def replicate_input_schema() -> dict[str, Any]:
    """meta/musicgen's `Input` schema as cog publishes it: types, defaults, choices, bounds.

    Only the model's own constraints: the studio's stricter limits are not the model's. A
    field without a default of its own (None, or empty text) has none in the schema.
    """
    properties: dict[str, dict[str, Any]] = {}
    for spec in INPUTS:
        prop: dict[str, Any] = {
            "title": spec.name.replace("_", " ").title(),
            "type": _JSON_TYPES[spec.kind],
            "description": spec.description,
        }
        if spec.kind == "file":
            prop["format"] = "uri"
        if spec.choices:
            prop["enum"] = list(spec.choices)
        if spec.minimum is not None:
            prop["minimum"] = spec.minimum
        if spec.maximum is not None:
            prop["maximum"] = spec.maximum
        if spec.exclusive_minimum is not None:
            prop["exclusiveMinimum"] = spec.exclusive_minimum
        if spec.default is not None and spec.default != "":
            prop["default"] = spec.default
        properties[spec.name] = prop
    return {"title": "Input", "type": "object", "properties": properties}
