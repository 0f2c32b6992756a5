"""What each input of a run means, in a musician's words, with its allowed values.

The API's parameter descriptions (and so the MCP tools') come from here; the allowed ranges
and choices come from the one table of limits that validation enforces.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from services.validation import CHOICES, LIMITS

MEANING: Mapping[str, str] = MappingProxyType(
    {
        "prompt": "Describe the music: genre, instruments, mood, tempo.",
        "input_audio": "An audio file: a melody to follow, or a clip to continue.",
        "duration": "Length of the result in seconds (with continuation: including the clip).",
        "continuation": "True: the result continues input_audio; false: it follows its melody.",
        "continuation_start": "Where in the clip the part to continue starts, in seconds.",
        "continuation_end": "Where that part ends, in seconds; empty: the end of the clip.",
        "model_version": "Which MusicGen: on Replicate one of its four models; on this machine "
        "a Hugging Face checkpoint id. Empty: the engine's default.",
        "multi_band_diffusion": "Decode with multi-band diffusion (Replicate's mono models only).",
        "normalization_strategy": "How the result's level is evened out.",
        "output_format": "The file format of the result.",
        "seed": "Fix it to make the same take again; empty or -1: a random seed.",
        "temperature": "Higher is more adventurous, lower more predictable.",
        "top_k": "Sample from this many likeliest tokens.",
        "top_p": "Sample from the likeliest tokens up to this probability; 0: use top_k.",
        "classifier_free_guidance": "How closely the music follows the prompt.",
        "engine": "Where the music is made: local (this machine), replicate, or empty for the "
        "server's default.",
        "api_token": "Your Replicate API token, when the server has none of its own.",
    }
)


def help_text(name: str) -> str:
    """The input's meaning and what it accepts."""
    text = MEANING.get(name, "")
    if name in CHOICES:
        text += f" One of: {', '.join(CHOICES[name])}."
    elif name == "prompt":
        text += f" At most {LIMITS[name].high:g} characters."
    elif name == "input_audio":
        text += f" At most {LIMITS[name].high / 60:g} minutes long."
    elif name in LIMITS:
        text += f" It is {LIMITS[name].words()}."
    return text.strip()


def docstring(summary: str, names: list[str], extra: Mapping[str, str], returns: str) -> str:
    """A Google-style docstring (what Gradio reads for API and MCP tool descriptions)."""
    lines = [summary, "", "Args:"]
    for name in names:
        lines.append(f"    {name}: {extra.get(name) or help_text(name)}")
    lines += ["", "Returns:", f"    {returns}"]
    return "\n".join(lines)
