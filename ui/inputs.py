"""The form: every model input with its default, range and one line of help."""

from __future__ import annotations

from dataclasses import dataclass, fields

import gradio as gr

from services.request import (
    COHERENT_MAX_SECONDS,
    MODEL_VERSIONS,
    NORMALIZATION_STRATEGIES,
    OUTPUT_FORMATS,
)
from services.validation import (
    DURATION_MIN,
    GUIDANCE_MAX,
    PROMPT_MAX_CHARS,
    TEMPERATURE_MAX,
    TOP_K_MAX,
    TOP_P_MAX,
)
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
TEMPERATURE_STEP = 0.05
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

    def components(self) -> list[gr.components.Component]:
        """The request's components, in `FormValues` order (the handlers' input list)."""
        return [getattr(self, f.name) for f in fields(FormValues)]


def build_form() -> Form:
    """Lay out the form inside the current Blocks context."""
    defaults = FormValues()
    prompt = gr.Textbox(
        label="Prompt",
        info="Describe the music: genre, instruments, mood, tempo. Ctrl/Cmd+Enter generates.",
        placeholder=EXAMPLE_PROMPTS[0],
        lines=3,
        max_lines=8,
        max_length=PROMPT_MAX_CHARS,
        elem_id="prompt",
    )
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
        label="Model",
        info="All are the large (3.3B) MusicGen. Stereo sounds wider; melody models can also "
        "follow a tune you give them.",
        elem_id="model-version",
    )
    with gr.Row():
        duration = gr.Slider(
            DURATION_MIN,
            COHERENT_MAX_SECONDS,
            value=defaults.duration,
            step=1,
            label="Duration (seconds)",
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
        label="Input audio (optional): a melody to follow or a clip to continue",
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
        continuation_start = gr.Slider(
            0,
            COHERENT_MAX_SECONDS,
            value=0,
            step=1,
            label="Continue from (s)",
            info=reason,
            interactive=False,
            elem_id="continuation-start",
            min_width=200,
        )
        continuation_end = gr.Slider(
            0,
            COHERENT_MAX_SECONDS,
            value=COHERENT_MAX_SECONDS,
            step=1,
            label="Continue until (s)",
            info="The part of the clip ends here.",
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
            top_k = gr.Slider(
                0,
                TOP_K_MAX,
                value=defaults.top_k,
                step=1,
                label="Top-k",
                info="Picks each step among the k likeliest sounds. Lower: safer; higher: "
                "more varied. Default 250.",
                elem_id="top-k",
                min_width=220,
            )
            top_p = gr.Slider(
                0,
                TOP_P_MAX,
                value=defaults.top_p,
                step=0.01,
                label="Top-p",
                info="0 uses top-k. Otherwise picks among the likeliest sounds covering this "
                "share of probability.",
                elem_id="top-p",
                min_width=220,
            )
        with gr.Row():
            temperature = gr.Slider(
                TEMPERATURE_STEP,
                TEMPERATURE_MAX,
                value=defaults.temperature,
                step=TEMPERATURE_STEP,
                label="Temperature",
                info="Lower: more predictable; higher: more adventurous. Default 1.",
                elem_id="temperature",
                min_width=220,
            )
            classifier_free_guidance = gr.Slider(
                0,
                GUIDANCE_MAX,
                value=defaults.classifier_free_guidance,
                step=1,
                label="Guidance",
                info="How closely to follow the prompt (classifier-free guidance). Default 3.",
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
                value=None,
                label="Seed",
                info="A whole number; the same seed and settings give the same music.",
                precision=0,
                interactive=False,
                elem_id="seed",
                min_width=160,
            )
            dice = gr.Button("⚄ Roll a seed", size="sm", elem_id="dice", min_width=120)
        with gr.Row():
            normalization_strategy = gr.Dropdown(
                [(f"{s}: {NORMALIZATION_HELP[s]}", s) for s in NORMALIZATION_STRATEGIES],
                value=defaults.normalization_strategy,
                label="Normalization",
                info="How the result's level is set.",
                elem_id="normalization",
                min_width=220,
            )
            output_format = gr.Radio(
                list(OUTPUT_FORMATS),
                value=defaults.output_format,
                label="Output format",
                info="wav: lossless, larger. mp3: smaller.",
                elem_id="output-format",
                min_width=160,
            )
        mbd = form_rules.mbd_state(defaults.model_version)
        multi_band_diffusion = gr.Checkbox(
            value=False,
            label="Multi-band diffusion",
            info=mbd.info,
            interactive=mbd.interactive,
            elem_id="multi-band-diffusion",
        )
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
    )
