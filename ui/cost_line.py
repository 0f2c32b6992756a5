"""The line under Generate that says, before anything is paid, what this run should cost.

It follows the engine, the model and the duration; the figure comes from
`GenerationService.estimate` (the library's own measured runs, else published figures).
Runs on this machine cost nothing and show no line.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import gradio as gr

from services.cost import FREE
from services.errors import StudioError
from services.settings import DEFAULT_BASE_URL
from ui.context import Studio
from ui.formatting import esc

ELEM_ID = "cost-estimate"


def cost_html(studio: Studio, engine: Any, model_version: Any, duration: Any) -> str:
    """The estimate as a small line of HTML ("" for this machine or an unreadable form)."""
    try:
        seconds = float(duration)
        estimate = studio.service.estimate(str(model_version or ""), seconds, engine or None)
    except (TypeError, ValueError, StudioError):
        return ""
    if estimate.basis == FREE:
        return ""
    base_url = studio.settings.base_url
    if base_url.rstrip("/") != DEFAULT_BASE_URL:
        # An emulator or another server: Replicate bills nothing for these runs.
        host = urlparse(base_url).netloc or base_url
        return (
            f'<p class="ms-cost">Runs go to {esc(host)}, not Replicate: no Replicate bill '
            f"(≈ {estimate.gpu_seconds:.0f} s of GPU time, ${estimate.price:.3f} at "
            "Replicate's rate).</p>"
        )
    return f'<p class="ms-cost">{esc(estimate.text)}</p>'


def build_cost_line(
    studio: Studio, engine: str | None, model_version: str, duration: float
) -> gr.HTML:
    """The line, filled for the form's starting values."""
    return gr.HTML(cost_html(studio, engine, model_version, duration), elem_id=ELEM_ID)


def wire_cost_line(
    studio: Studio,
    line: gr.HTML,
    inputs: list[Any],
    triggers: list[Any],
) -> None:
    """Refresh the line when the engine, model or duration changes (and on `triggers`)."""

    def refresh(engine: Any, model_version: Any, duration: Any) -> str:
        return cost_html(studio, engine, model_version, duration)

    changes = [component.change for component in inputs]
    gr.on(
        triggers=[*changes, *triggers],
        fn=refresh,
        inputs=inputs,
        outputs=[line],
        api_visibility="private",
        show_progress="hidden",
        queue=False,
    )
