"""Which engine makes the next run ("This machine" or "Replicate"), and its model choices.

Replicate's four models keep their radio in the form; the local engine's checkpoints get a
dropdown of their own, shown instead of that radio while "This machine" is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from services.engines.protocol import LOCAL
from services.engines.registry import Engines
from ui.events import PRIVATE
from ui.form_rules import mbd_state

LOCAL_MBD = "Replicate only: multi-band diffusion is not available on this machine."


@dataclass
class EnginePicker:
    """The engine choice and the local checkpoint dropdown."""

    engine: gr.Radio
    local_model: gr.Dropdown
    load_line: gr.Markdown  # the local model's load at start, until it is done
    load_timer: gr.Timer


def build_engine_picker(engines: Engines) -> EnginePicker:
    """Lay out the picker; hidden when this deployment offers one engine only."""
    options = engines.options()
    default = engines.default_name()
    engine = gr.Radio(
        [(o.label, o.name) for o in options],
        value=default,
        label="Engine",
        info="This machine needs no account; Replicate runs the large models on its GPUs "
        "(needs a token, billed to your account).",
        visible=len(options) > 1,
        elem_id="engine-choice",
    )
    local = engines.local
    choices = (
        [(f"{name} · {what}", name) for name, what in local.model_choices().items()]
        if local is not None
        else []
    )
    local_model = gr.Dropdown(
        choices,
        value=local.default_model() if local is not None else None,
        label="Model on this machine",
        info="Hugging Face checkpoints; the first run of one downloads it. A melody clip uses "
        "the configured melody checkpoint when this one cannot follow a melody.",
        visible=default == LOCAL,
        elem_id="local-model",
    )
    line, loading = engines.load_line()
    load_line = gr.Markdown(line, visible=bool(line), elem_id="local-model-load")
    load_timer = gr.Timer(1.0, active=loading)  # ticks only while the load goes on
    return EnginePicker(engine, local_model, load_line, load_timer)


def wire_engine_picker(
    picker: EnginePicker,
    replicate_model: gr.components.Component,
    multi_band_diffusion: gr.components.Component,
    engines: Engines,
) -> None:
    """Show the model choice that belongs to the chosen engine and the local model's load;
    multi-band diffusion says it is Replicate's only while this machine is chosen (not a
    Replicate model's rule)."""

    def tick() -> tuple[Any, Any]:
        line, loading = engines.load_line()
        return gr.update(value=line, visible=bool(line)), gr.Timer(active=loading)

    picker.load_timer.tick(tick, None, [picker.load_line, picker.load_timer], **PRIVATE)

    def switch(name: str | None, model_version: str | None) -> tuple[Any, Any, Any]:
        local = name == LOCAL
        return (
            gr.update(visible=local),
            gr.update(visible=not local),
            mbd_update(name, model_version),
        )

    picker.engine.change(
        switch,
        [picker.engine, replicate_model],
        [picker.local_model, replicate_model, multi_band_diffusion],
        **PRIVATE,
    )


def mbd_update(engine: str | None, model_version: str | None) -> Any:
    """Multi-band diffusion's state for the chosen engine and Replicate model."""
    if engine == LOCAL:
        return gr.update(value=False, interactive=False, info=LOCAL_MBD)
    state = mbd_state(model_version or "")
    update: dict[str, Any] = {"interactive": state.interactive, "info": state.info}
    if state.force_value:
        update["value"] = state.value
    return gr.update(**update)


def model_for(engine: str | None, local_model: str | None, values: dict[str, Any]) -> None:
    """Put the chosen local checkpoint in the request's values when the run is local."""
    if engine == LOCAL:
        values["model_version"] = local_model or None
