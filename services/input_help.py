"""What each input of a run means, in a musician's words, with its allowed values.

The API's parameter descriptions (and so the MCP tools') come from here: the model's inputs'
meanings are their descriptions in `services.musicgen`, and the allowed ranges and choices the
limits that validation enforces, declared on the same fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from services.musicgen import BY_NAME, CHOICES, INPUTS, LIMITS

MEANING: Mapping[str, str] = MappingProxyType(
    {
        **{spec.name: spec.description for spec in INPUTS},
        # The studio's own API parameters, beside the model's inputs.
        "engine": "Where the music is made: local (this machine), replicate, or empty for the "
        "server's default.",
        "api_token": "Your Replicate API token, when the server has none of its own.",
    }
)


def help_text(name: str) -> str:
    """The input's meaning and what it accepts."""
    text = MEANING.get(name, "")
    kind = BY_NAME[name].kind if name in BY_NAME else None
    if name in CHOICES:
        text += f" One of: {', '.join(CHOICES[name])}."
    elif name not in LIMITS:
        pass
    elif kind == "text":
        text += f" At most {LIMITS[name].high:g} characters."
    elif kind == "file":
        text += f" At most {LIMITS[name].high / 60:g} minutes long."
    else:
        text += f" It is {LIMITS[name].words()}."
    return text.strip()


def docstring(summary: str, names: list[str], extra: Mapping[str, str], returns: str) -> str:
    """A Google-style docstring (what Gradio reads for API and MCP tool descriptions)."""
    lines = [summary, "", "Args:"]
    for name in names:
        lines.append(f"    {name}: {extra.get(name) or help_text(name)}")
    lines += ["", "Returns:", f"    {returns}"]
    return "\n".join(lines)
