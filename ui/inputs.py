"""The form: every model input with its default, range and one line of help.

Labels, help lines, defaults, ranges, steps and choices come from the fields of
`services.musicgen.GenerationRequest` (`control` makes any input's control from its field);
this module only says where each goes. The form keeps its controls by the inputs' names, and
its handlers, `request_values` and reuse go by the schema's fields, so an input the layout
places is one line here, and one it does not place still gets a control under "More inputs".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import gradio as gr

from services.musicgen import BY_NAME, COHERENT_MAX_SECONDS, INPUT_NAMES, MODEL_VERSIONS
from ui import form_rules
from ui.form_rules import USE_CHOICES, USE_MELODY, FormValues

EXAMPLE_PROMPTS = [
    "Lo-fi hip hop beat with dusty vinyl crackle, mellow Rhodes chords, 80 bpm",
    "Epic orchestral trailer cue, pounding taiko drums, soaring brass, rising tension",
    "Upbeat synthwave with a driving bassline, gated reverb drums and a bright lead, 118 bpm",
    "Acoustic folk guitar fingerpicking with soft harmonica, warm and intimate",
    "Deep house groove, four-on-the-floor kick, filtered chords, 124 bpm",
]
MODEL_CHOICES = [(f"{name} · {what}", name) for name, what in MODEL_VERSIONS.items()]
NORMALIZATION_HELP = {
    "loudness": "even perceived loudness (default)",
    "clip": "hard-limits peaks",
    "peak": "scales the loudest peak to full level",
    "rms": "even average level",
}
# The temperature must be above 0: its slider starts one step up.
TEMPERATURE_STEP = BY_NAME["temperature"].input.step
WAVEFORM = gr.WaveformOptions(waveform_color="#9ca3af", waveform_progress_color="#f97316")


C = TypeVar("C", bound=gr.components.Component)


@dataclass
class Form:
    """The form's components: one control per model input, by the input's name, then the
    page's own switches and helpers."""

    inputs: dict[str, gr.components.Component]  # every input of `GenerationRequest`
    long_mode: gr.Checkbox
    to_end: gr.Checkbox
    random_seed: gr.Checkbox
    # Not part of the request:
    dice: gr.Button
    clip_info: gr.HTML
    duration_note: gr.HTML
    # The inputs the layout has no place for: a control of their kind under "More inputs".
    extras: tuple[str, ...] = ()

    def components(self) -> list[gr.components.Component]:
        """The request's components, in `FormValues.ordered` order (the handlers' input list)."""
        return form_rules.in_form_order(self)

    def control(self, name: str, kind: type[C]) -> C:
        """The input's control, as the component the layout made of it."""
        return _made(name, self.inputs[name], kind)


def _made(name: str, component: gr.components.Component, kind: type[C]) -> C:
    if not isinstance(component, kind):
        raise TypeError(f"{name}'s control is a {type(component).__name__}, not a {kind}")
    return component


def _kind_control(name: str) -> type[gr.components.Component]:
    """The control an input of this kind gets unless the layout says otherwise."""
    spec = BY_NAME[name]
    if spec.kind in ("whole", "number"):
        return gr.Slider if spec.limit is not None else gr.Number
    controls: dict[str, type[gr.components.Component]] = {
        "switch": gr.Checkbox,
        "choice": gr.Dropdown,
        "file": gr.Audio,
        "text": gr.Textbox,
    }
    return controls[spec.kind]


def control(
    name: str, component: type[gr.components.Component] | None = None, **layout: Any
) -> gr.components.Component:
    """The input's control, labelled, ranged and set to its default by its declaration alone.

    `component` is the control of its kind unless given; `layout` places it (elem_id, width)
    and may change the rest (a narrower range, the choices' words, a help line of the rules).
    """
    spec = BY_NAME[name]
    kind = component or _kind_control(name)
    if kind is gr.Slider:
        return _slider(name, **layout)
    options: dict[str, Any] = {"label": spec.page_label}
    if kind is gr.Audio:
        options["type"] = "filepath"
    else:
        options.update(info=spec.page_info, value=spec.default)
    if kind in (gr.Dropdown, gr.Radio):
        options["choices"] = _choices(name)
    elif kind is gr.Number:
        options["precision"] = 0 if spec.kind == "whole" else None
    elif kind is gr.Checkbox:
        options["value"] = bool(spec.default)
    elif kind is gr.Textbox:
        options["value"] = spec.default or ""
    return kind(**{**options, **layout})


def _slider(name: str, **layout: Any) -> gr.Slider:
    """A slider over the field's own limit, default, step, label and help line.

    `layout` sets the rest (elem_id, width) and may narrow the range (`minimum`/`maximum`)
    where the page shows less than the request accepts (durations beyond 30 s, the clip).
    """
    spec = BY_NAME[name]
    limit = spec.limit
    if limit is None:
        raise ValueError(f"{name} has no limit to make a slider of")
    step = spec.input.step
    options: dict[str, Any] = {
        # A range open at its low end starts one step up.
        "minimum": limit.low + step if limit.low_open else limit.low,
        "maximum": limit.high,
        "value": spec.default,
        "step": step,
        "label": spec.page_label,
        "info": spec.page_info,
    }
    options.update(layout)
    return gr.Slider(**options)


def _choices(name: str, words: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """The field's choices, each shown with a few words when there are some."""
    spec = BY_NAME[name]
    if words is None:
        return [(choice, choice) for choice in spec.choices]
    return [(f"{choice}: {words[choice]}", choice) for choice in spec.choices]


def build_prompt() -> gr.Textbox:
    """The prompt (laid out first on the page, beside Generate)."""
    limit = BY_NAME["prompt"].limit
    prompt = control(
        "prompt",
        placeholder=EXAMPLE_PROMPTS[0],
        lines=3,
        max_lines=8,
        max_length=int(limit.high) if limit else None,
        elem_id="prompt",
    )
    return _made("prompt", prompt, gr.Textbox)


def build_form(prompt: gr.Textbox | None = None) -> Form:
    """Lay out the form inside the current Blocks context; `prompt` when laid out elsewhere.

    The layout only says where each input goes (and how it looks, where it differs from its
    kind's control); an input it has no place for gets a control of its kind under "More
    inputs", and the handlers, reuse and the request take every input by its name.
    """
    start = FormValues()
    inputs: dict[str, gr.components.Component] = {}
    inputs["prompt"] = prompt = build_prompt() if prompt is None else prompt
    gr.Examples(
        examples=[[p] for p in EXAMPLE_PROMPTS],
        inputs=[prompt],
        label="Example prompts (click one)",
        api_visibility="private",
        elem_id="example-prompts",
    )
    inputs["model_version"] = control(
        "model_version", gr.Radio, choices=MODEL_CHOICES, elem_id="model-version"
    )
    with gr.Row():
        inputs["duration"] = control(
            "duration",
            maximum=COHERENT_MAX_SECONDS,  # "Longer than 30 s" unlocks the rest
            info=form_rules.duration_limits(False, start.inputs["duration"])[2],
            elem_id="duration-slider",
            scale=3,
            min_width=240,
        )
        long_mode = gr.Checkbox(
            value=start.long_mode,
            label="Longer than 30 s",
            info=f"Unlocks up to {form_rules.LONG_MAX_SECONDS} s: slower and less coherent.",
            elem_id="long-mode",
            scale=1,
            min_width=160,
        )
    duration_note = gr.HTML("", elem_id="duration-note")
    inputs["input_audio"] = control(
        "input_audio",
        sources=["upload", "microphone"],
        waveform_options=WAVEFORM,
        elem_id="input-audio",
    )
    clip_info = gr.HTML("", elem_id="clip-info")
    # "continuation" is the choice of what to do with the clip.
    use_state = form_rules.audio_use_state(False, start.inputs["model_version"], USE_MELODY)
    inputs["continuation"] = gr.Radio(
        USE_CHOICES,
        value=start.inputs["continuation"],
        label="Use the clip as",
        info=use_state.info,
        interactive=use_state.interactive,
        elem_id="audio-use",
    )
    reason = form_rules.continuation_state(False, False, None)
    with gr.Row():
        # Within the clip: the ranges follow the clip once there is one.
        inputs["continuation_start"] = control(
            "continuation_start",
            maximum=COHERENT_MAX_SECONDS,
            info=reason,
            interactive=False,
            elem_id="continuation-start",
            min_width=200,
        )
        inputs["continuation_end"] = control(
            "continuation_end",
            maximum=COHERENT_MAX_SECONDS,
            value=start.inputs["continuation_end"],
            interactive=False,
            elem_id="continuation-end",
            min_width=200,
        )
    to_end = gr.Checkbox(
        value=start.to_end,
        label="Until the end of the clip",
        interactive=False,
        elem_id="to-end",
    )
    with gr.Accordion("Advanced", open=False, elem_id="advanced"):
        with gr.Row():
            inputs["top_k"] = control("top_k", elem_id="top-k", min_width=220)
            inputs["top_p"] = control("top_p", elem_id="top-p", min_width=220)
        with gr.Row():
            inputs["temperature"] = control("temperature", elem_id="temperature", min_width=220)
            inputs["classifier_free_guidance"] = control(
                "classifier_free_guidance", elem_id="guidance", min_width=220
            )
        with gr.Row():
            random_seed = gr.Checkbox(
                value=start.random_seed,
                label="Random seed",
                info="Untick to repeat a result exactly with a fixed seed.",
                elem_id="random-seed",
                min_width=160,
            )
            inputs["seed"] = control(
                "seed",
                gr.Number,
                interactive=not start.random_seed,
                elem_id="seed",
                min_width=160,
            )
            dice = gr.Button("⚄ Roll a seed", size="sm", elem_id="dice", min_width=120)
        with gr.Row():
            inputs["normalization_strategy"] = control(
                "normalization_strategy",
                choices=_choices("normalization_strategy", NORMALIZATION_HELP),
                elem_id="normalization",
                min_width=220,
            )
            inputs["output_format"] = control(
                "output_format", gr.Radio, elem_id="output-format", min_width=160
            )
        mbd = form_rules.mbd_state(start.inputs["model_version"])
        inputs["multi_band_diffusion"] = control(
            "multi_band_diffusion",
            info=mbd.info,
            interactive=mbd.interactive,
            elem_id="multi-band-diffusion",
        )
    extras = tuple(name for name in INPUT_NAMES if name not in inputs)
    with gr.Accordion("More inputs", open=False, visible=bool(extras)):
        for name in extras:
            inputs[name] = control(name, elem_id=f"extra-{name}")
    return Form(
        inputs=inputs,
        long_mode=long_mode,
        to_end=to_end,
        random_seed=random_seed,
        dice=dice,
        clip_info=clip_info,
        duration_note=duration_note,
        extras=extras,
    )
