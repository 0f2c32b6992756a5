"""meta/musicgen's input schema (cog-musicgen 647e795) and Replicate's 422 checks against it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MODEL_VERSIONS = ["stereo-melody-large", "stereo-large", "melody-large", "large"]
NORMALIZATION_STRATEGIES = ["loudness", "clip", "peak", "rms"]
OUTPUT_FORMATS = ["wav", "mp3"]

# The `Input` schema as cog publishes it: types, defaults, choices and bounds.
INPUT_SCHEMA: dict[str, dict[str, Any]] = {
    "model_version": {"type": "string", "enum": MODEL_VERSIONS, "default": "stereo-melody-large"},
    "prompt": {"type": "string"},
    "input_audio": {"type": "string", "format": "uri"},
    "duration": {"type": "integer", "default": 8},
    "continuation": {"type": "boolean", "default": False},
    "continuation_start": {"type": "integer", "minimum": 0, "default": 0},
    "continuation_end": {"type": "integer", "minimum": 0},
    "multi_band_diffusion": {"type": "boolean", "default": False},
    "normalization_strategy": {
        "type": "string",
        "enum": NORMALIZATION_STRATEGIES,
        "default": "loudness",
    },
    "top_k": {"type": "integer", "default": 250},
    "top_p": {"type": "number", "default": 0.0},
    "temperature": {"type": "number", "default": 1.0},
    "classifier_free_guidance": {"type": "integer", "default": 3},
    "output_format": {"type": "string", "enum": OUTPUT_FORMATS, "default": "wav"},
    "seed": {"type": "integer"},
}


@dataclass(frozen=True)
class InvalidField:
    """One entry of a 422 answer's `invalid_fields`."""

    type: str
    field: str
    description: str

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "field": self.field, "description": self.description}


def json_type(value: Any) -> str:
    """The JSON Schema type name of a decoded JSON value (whole floats count as integer)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(expected: str, given: str) -> bool:
    return given == expected or (expected == "number" and given == "integer")


def _is_uri(value: str) -> bool:
    parts = urlsplit(value)
    return bool(parts.scheme) and (bool(parts.netloc) or parts.scheme == "data")


def validate_input(payload: Any) -> list[InvalidField]:
    """Every schema violation in a prediction's `input`, in the order fields are given."""
    if not isinstance(payload, dict):
        given = json_type(payload)
        return [
            InvalidField("invalid_type", "input", f"Invalid type. Expected: object, given: {given}")
        ]
    problems: list[InvalidField] = []
    for name, value in payload.items():
        field = f"input.{name}"
        spec = INPUT_SCHEMA.get(name)
        if spec is None:
            problems.append(
                InvalidField(
                    "additional_property_not_allowed",
                    field,
                    f"Additional property {name} is not allowed",
                )
            )
            continue
        given = json_type(value)
        if not _type_ok(spec["type"], given):
            problems.append(
                InvalidField(
                    "invalid_type",
                    field,
                    f"Invalid type. Expected: {spec['type']}, given: {given}",
                )
            )
            continue
        if "enum" in spec and value not in spec["enum"]:
            allowed = ", ".join(json.dumps(choice) for choice in spec["enum"])
            problems.append(
                InvalidField("enum", field, f"{name} must be one of the following: {allowed}")
            )
        if "minimum" in spec and value < spec["minimum"]:
            problems.append(
                InvalidField(
                    "number_gte", field, f"Must be greater than or equal to {spec['minimum']}"
                )
            )
        if spec.get("format") == "uri" and not _is_uri(value):
            problems.append(InvalidField("format", field, "Does not match format 'uri'"))
    return problems


def with_defaults(payload: dict[str, Any]) -> dict[str, Any]:
    """The arguments the model's predict() receives: given values over the schema defaults."""
    merged: dict[str, Any] = {name: spec.get("default") for name, spec in INPUT_SCHEMA.items()}
    merged.update(payload)
    for name in ("duration", "continuation_start", "continuation_end", "top_k", "seed"):
        if isinstance(merged.get(name), float):
            merged[name] = int(merged[name])
    if isinstance(merged.get("classifier_free_guidance"), float):
        merged["classifier_free_guidance"] = int(merged["classifier_free_guidance"])
    return merged
