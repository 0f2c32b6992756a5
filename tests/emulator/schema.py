"""meta/musicgen's input schema and Replicate's 422 checks against it.

The schema is the one the studio's request model produces (`replicate_input_schema`): the
model's own types, defaults, choices and bounds, as cog publishes them (cog-musicgen 647e795),
and not the studio's stricter limits: the emulator plays Replicate, which accepts what the
model accepts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from services.musicgen import replicate_input_schema

# The `Input` schema's properties: name -> type, default, enum, bounds, format.
INPUT_SCHEMA: dict[str, dict[str, Any]] = replicate_input_schema()["properties"]


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
        if "exclusiveMinimum" in spec and value <= spec["exclusiveMinimum"]:
            problems.append(
                InvalidField("number_gt", field, f"Must be greater than {spec['exclusiveMinimum']}")
            )
        if "maximum" in spec and value > spec["maximum"]:
            problems.append(
                InvalidField(
                    "number_lte", field, f"Must be less than or equal to {spec['maximum']}"
                )
            )
        if spec.get("format") == "uri" and not _is_uri(value):
            problems.append(InvalidField("format", field, "Does not match format 'uri'"))
    return problems


def with_defaults(payload: dict[str, Any]) -> dict[str, Any]:
    """The arguments the model's predict() receives: given values over the schema defaults."""
    merged: dict[str, Any] = {name: spec.get("default") for name, spec in INPUT_SCHEMA.items()}
    merged.update(payload)
    for name, spec in INPUT_SCHEMA.items():
        if spec["type"] == "integer" and isinstance(merged.get(name), float):
            merged[name] = int(merged[name])
    return merged
