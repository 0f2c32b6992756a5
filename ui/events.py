"""The one convention for wiring the page's events.

Every page event is private (never a named endpoint: those live in `ui.endpoints`) and shows no
Gradio spinner (each panel shows its own state); small instant ones skip the queue too.
Handlers that change several components return `Updates`, a dict keyed by component.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from gradio.blocks import Block

PRIVATE: Mapping[str, Any] = MappingProxyType(
    {"api_visibility": "private", "show_progress": "hidden"}
)
QUICK: Mapping[str, Any] = MappingProxyType({**PRIVATE, "queue": False})

# Keys are components or layout blocks (a Row's visibility, a Timer's activity).
Updates = dict[Block, Any]
