"""The form reacting to itself: controls that cannot apply are disabled and say why."""

from __future__ import annotations

from typing import Any

import gradio as gr

from services.audio import CLIP_MAX_SECONDS, probe, too_large_message, too_long_message
from services.errors import AudioError
from services.replicate.files import MAX_UPLOAD_BYTES
from ui import form_rules
from ui.events import QUICK
from ui.form_rules import USE_CONTINUATION, ControlState
from ui.formatting import esc, message_html, warnings_html
from ui.inputs import Form


def _control(state: ControlState) -> dict[str, Any]:
    update: dict[str, Any] = {"interactive": state.interactive, "info": state.info}
    if state.force_value:
        update["value"] = state.value
    return gr.update(**update)


def continuation_updates(
    audio: str | None, use: str, clip_seconds: float | None, start: float, end: float, to_end: bool
) -> tuple[Any, Any, Any]:
    """Start, end and "until the end", bound to the clip's real length.

    A clip of 1 s or less is continued from its start: the start slider keeps a valid 0–1
    range (a slider's maximum must stay above its minimum) but is held at 0.
    """
    has_audio = bool(audio)
    enabled = form_rules.continuation_enabled(has_audio, use == USE_CONTINUATION)
    start_max, end_max = form_rules.clip_bounds(clip_seconds)
    pick_start = form_rules.start_choosable(clip_seconds)
    reason = form_rules.continuation_state(has_audio, use == USE_CONTINUATION, clip_seconds)
    end_info = (
        "Ticked “Until the end of the clip” below: the part runs to the clip's end."
        if to_end
        else f"Where the part of the clip ends (at most {end_max} s)."
    )
    # Values are only touched when they must change: rewriting them would race with the
    # visitor's typing (these updates arrive after their click).
    start_update: dict[str, Any] = {
        "interactive": enabled and pick_start,
        "info": reason,
        "maximum": start_max,
    }
    if not pick_start and (start or 0) != 0:
        start_update["value"] = 0
    elif (start or 0) > start_max:
        start_update["value"] = start_max
    end_update: dict[str, Any] = {
        "interactive": enabled and not to_end,
        "info": end_info if enabled else reason,
        "maximum": end_max,
    }
    if to_end or (end or 0) > end_max:
        end_update["value"] = end_max
    return gr.update(**start_update), gr.update(**end_update), gr.update(interactive=enabled)


def on_model(model_version: str, audio: str | None, use: str) -> tuple[Any, Any]:
    mbd = form_rules.mbd_state(model_version)
    use_state = form_rules.audio_use_state(bool(audio), model_version, use)
    return _control(mbd), _control(use_state)


def _clip_text(audio: str | None) -> tuple[float | None, str]:
    """The clip's measured length and a line about it (or why it cannot be used)."""
    if not audio:
        return None, ""
    try:
        info = probe(audio, max_seconds=CLIP_MAX_SECONDS)  # stops decoding past the limit
    except AudioError as err:
        return None, message_html(str(err), kind="error")
    if info.size_bytes > MAX_UPLOAD_BYTES:
        return info.seconds, message_html(too_large_message(info.size_bytes), kind="error")
    if info.seconds > CLIP_MAX_SECONDS:
        return info.seconds, message_html(too_long_message(CLIP_MAX_SECONDS), kind="error")
    channels = {1: "mono", 2: "stereo"}.get(info.channels, f"{info.channels} channels")
    text = f"Clip: {info.seconds:.1f} s, {channels}, {info.format}."
    return info.seconds, f'<div class="ms-clip-info">{esc(text)}</div>'


def on_clip(
    audio: str | None,
    model_version: str,
    use: str,
    start: float,
    end: float,
    to_end: bool,
) -> tuple[Any, ...]:
    """A clip was added, recorded, replaced or removed: measure it and bind start/end to it."""
    seconds, text = _clip_text(audio)
    use_state = form_rules.audio_use_state(bool(audio), model_version, use)
    if use_state.force_value:
        use = use_state.value
    return (
        seconds,
        text,
        _control(use_state),
        *continuation_updates(audio, use, seconds, start, end, to_end),
    )


def on_long_mode(long_mode: bool, duration: float) -> tuple[Any, str]:
    maximum, value, info = form_rules.duration_limits(long_mode, duration)
    note = warnings_html([form_rules.LONG_WARNING]) if long_mode else ""
    return gr.update(maximum=maximum, value=value, info=info), note


def wire_form(form: Form, clip_seconds: gr.State, parent_run: gr.State) -> None:
    """Attach the form's own events (all private, none sends anything)."""
    f = form
    model_version = f.control("model_version", gr.Radio)
    audio = f.control("input_audio", gr.Audio)
    use = f.control("continuation", gr.Radio)  # "Use the clip as"
    mbd = f.inputs["multi_band_diffusion"]
    model_version.change(on_model, [model_version, audio, use], [mbd, use], **QUICK)
    continuation_inputs = [audio, use, clip_seconds]
    bounds = [f.inputs["continuation_start"], f.inputs["continuation_end"], f.to_end]
    audio.change(
        on_clip,
        [audio, model_version, use, *bounds],
        [clip_seconds, f.clip_info, use, *bounds],
        queue=True,  # decodes the clip: may take a moment for a long file
        show_progress="hidden",
        api_visibility="private",
    )
    # A clip the visitor chose themselves no longer comes from an earlier run.
    for event in (audio.upload, audio.stop_recording, audio.clear):
        event(lambda: None, None, [parent_run], **QUICK)
    use.change(continuation_updates, [*continuation_inputs, *bounds], bounds, **QUICK)
    f.to_end.change(continuation_updates, [*continuation_inputs, *bounds], bounds, **QUICK)
    duration = f.inputs["duration"]
    f.long_mode.change(on_long_mode, [f.long_mode, duration], [duration, f.duration_note], **QUICK)
    seed = f.inputs["seed"]
    f.random_seed.change(
        lambda random_seed: gr.update(interactive=not random_seed),
        [f.random_seed],
        [seed],
        **QUICK,
    )
    f.dice.click(
        lambda: (False, form_rules.random_seed_value()), None, [f.random_seed, seed], **QUICK
    )
