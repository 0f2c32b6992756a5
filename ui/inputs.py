"""The form: every model input with its default, range and one line of help.

Labels, help lines, defaults, ranges, steps and choices come from the fields of
`services.musicgen.GenerationRequest`; this module only lays them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import gradio as gr

from services.musicgen import BY_NAME, COHERENT_MAX_SECONDS, MODEL_VERSIONS
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


@dataclass
class Form:
    """The form's components, in the order of `FormValues`' fields."""

    prompt: gr.Textbox
    model_version: gr.Radio
    duration: gr.Slider
    long_mode: gr.Checkbox
    input_audio: gr.Audio
    audio_use: gr.Radio
    continuation_start: gr.Slider
    continuation_end: gr.Slider
    to_end: gr.Checkbox
    top_k: gr.Slider
    top_p: gr.Slider
    temperature: gr.Slider
    classifier_free_guidance: gr.Slider
    random_seed: gr.Checkbox
    seed: gr.Number
    normalization_strategy: gr.Dropdown
    output_format: gr.Radio
    multi_band_diffusion: gr.Checkbox
    # Not part of the request:
    dice: gr.Button
    clip_info: gr.HTML
    duration_note: gr.HTML
    # One generic control per input of EXTRA_INPUTS, in that order.
    extras: list[gr.components.Component] = field(default_factory=list)

    def components(self) -> list[gr.components.Component]:
        """The request's components, in `FormValues` order (the handlers' input list)."""
        laid_out = [getattr(self, f.name) for f in fields(FormValues) if f.name != "extras"]
        return [*laid_out, *self.extras]


def _extra_control(name: str) -> gr.components.Component:
    """A control of the input's kind, from its declaration alone."""
    spec = BY_NAME[name]
    common: dict[str, Any] = {
        "label": spec.page_label,
        "info": spec.page_info,
        "elem_id": f"extra-{name}",
    }
    if spec.kind == "switch":
        return gr.Checkbox(value=bool(spec.default), **common)
    if spec.kind == "choice":
        return gr.Dropdown(list(spec.choices), value=spec.default, **common)
    if spec.kind in ("whole", "number") and spec.limit is not None:
        return _slider(name, elem_id=common["elem_id"])
    if spec.kind in ("whole", "number"):
        return gr.Number(
            value=spec.default, precision=0 if spec.kind == "whole" else None, **common
        )
    if spec.kind == "file":
        return gr.Audio(type="filepath", label=spec.page_label, elem_id=common["elem_id"])
    return gr.Textbox(value=spec.default or "", **common)


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
    defaults = FormValues()
    prompt_spec = BY_NAME["prompt"]
    return gr.Textbox(
        value=defaults.prompt,
        label=prompt_spec.page_label,
        info=prompt_spec.page_info,
        placeholder=EXAMPLE_PROMPTS[0],
        lines=3,
        max_lines=8,
        max_length=int(prompt_spec.limit.high) if prompt_spec.limit else None,
        elem_id="prompt",
    )


def build_form(prompt: gr.Textbox | None = None) -> Form:
    """Lay out the form inside the current Blocks context; `prompt` when laid out elsewhere."""
    defaults = FormValues()
    if prompt is None:
        prompt = build_prompt()
    gr.Examples(
        examples=[[p] for p in EXAMPLE_PROMPTS],
        inputs=[prompt],
        label="Example prompts (click one)",
        api_visibility="private",
        elem_id="example-prompts",
    )
    model_version = gr.Radio(
        MODEL_CHOICES,
        value=defaults.model_version,
        label=BY_NAME["model_version"].page_label,
        info=BY_NAME["model_version"].page_info,
        elem_id="model-version",
    )
    with gr.Row():
        duration = _slider(
            "duration",
            maximum=COHERENT_MAX_SECONDS,  # "Longer than 30 s" unlocks the rest
            value=defaults.duration,
            info=form_rules.duration_limits(False, defaults.duration)[2],
            elem_id="duration-slider",
            scale=3,
            min_width=240,
        )
        long_mode = gr.Checkbox(
            value=False,
            label="Longer than 30 s",
            info=f"Unlocks up to {form_rules.LONG_MAX_SECONDS} s: slower and less coherent.",
            elem_id="long-mode",
            scale=1,
            min_width=160,
        )
    duration_note = gr.HTML("", elem_id="duration-note")
    input_audio = gr.Audio(
        sources=["upload", "microphone"],
        type="filepath",
        label=BY_NAME["input_audio"].page_label,
        waveform_options=WAVEFORM,
        elem_id="input-audio",
    )
    clip_info = gr.HTML("", elem_id="clip-info")
    use_state = form_rules.audio_use_state(False, defaults.model_version, USE_MELODY)
    audio_use = gr.Radio(
        USE_CHOICES,
        value=USE_MELODY,
        label="Use the clip as",
        info=use_state.info,
        interactive=use_state.interactive,
        elem_id="audio-use",
    )
    reason = form_rules.continuation_state(False, False, None)
    with gr.Row():
        # Within the clip: the ranges follow the clip once there is one.
        continuation_start = _slider(
            "continuation_start",
            maximum=COHERENT_MAX_SECONDS,
            value=defaults.continuation_start,
            info=reason,
            interactive=False,
            elem_id="continuation-start",
            min_width=200,
        )
        continuation_end = _slider(
            "continuation_end",
            maximum=COHERENT_MAX_SECONDS,
            value=COHERENT_MAX_SECONDS,
            interactive=False,
            elem_id="continuation-end",
            min_width=200,
        )
    to_end = gr.Checkbox(
        value=True,
        label="Until the end of the clip",
        interactive=False,
        elem_id="to-end",
    )
    with gr.Accordion("Advanced", open=False, elem_id="advanced"):
        with gr.Row():
            top_k = _slider(
                "top_k",
                value=defaults.top_k,
                elem_id="top-k",
                min_width=220,
            )
            top_p = _slider(
                "top_p",
                value=defaults.top_p,
                elem_id="top-p",
                min_width=220,
            )
        with gr.Row():
            temperature = _slider(
                "temperature",
                value=defaults.temperature,
                elem_id="temperature",
                min_width=220,
            )
            classifier_free_guidance = _slider(
                "classifier_free_guidance",
                value=defaults.classifier_free_guidance,
                elem_id="guidance",
                min_width=220,
            )
        with gr.Row():
            random_seed = gr.Checkbox(
                value=True,
                label="Random seed",
                info="Untick to repeat a result exactly with a fixed seed.",
                elem_id="random-seed",
                min_width=160,
            )
            seed = gr.Number(
                value=defaults.seed,
                label=BY_NAME["seed"].page_label,
                info=BY_NAME["seed"].page_info,
                precision=0,
                interactive=False,
                elem_id="seed",
                min_width=160,
            )
            dice = gr.Button("⚄ Roll a seed", size="sm", elem_id="dice", min_width=120)
        with gr.Row():
            normalization_strategy = gr.Dropdown(
                _choices("normalization_strategy", NORMALIZATION_HELP),
                value=defaults.normalization_strategy,
                label=BY_NAME["normalization_strategy"].page_label,
                info=BY_NAME["normalization_strategy"].page_info,
                elem_id="normalization",
                min_width=220,
            )
            output_format = gr.Radio(
                _choices("output_format"),
                value=defaults.output_format,
                label=BY_NAME["output_format"].page_label,
                info=BY_NAME["output_format"].page_info,
                elem_id="output-format",
                min_width=160,
            )
        mbd = form_rules.mbd_state(defaults.model_version)
        multi_band_diffusion = gr.Checkbox(
            value=defaults.multi_band_diffusion,
            label=BY_NAME["multi_band_diffusion"].page_label,
            info=mbd.info,
            interactive=mbd.interactive,
            elem_id="multi-band-diffusion",
        )
    with gr.Accordion("More inputs", open=False, visible=bool(form_rules.EXTRA_INPUTS)):
        extras = [_extra_control(name) for name in form_rules.EXTRA_INPUTS]
    return Form(
        prompt=prompt,
        model_version=model_version,
        duration=duration,
        long_mode=long_mode,
        input_audio=input_audio,
        audio_use=audio_use,
        continuation_start=continuation_start,
        continuation_end=continuation_end,
        to_end=to_end,
        top_k=top_k,
        top_p=top_p,
        temperature=temperature,
        classifier_free_guidance=classifier_free_guidance,
        random_seed=random_seed,
        seed=seed,
        normalization_strategy=normalization_strategy,
        output_format=output_format,
        multi_band_diffusion=multi_band_diffusion,
        dice=dice,
        clip_info=clip_info,
        duration_note=duration_note,
        extras=extras,
    )
