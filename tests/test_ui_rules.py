"""The page's rules that need no browser: escaping, identities, the form -> request mapping."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from services.errors import FieldError
from services.library import Library
from services.musicgen import (
    DURATION_MAX,
    GUIDANCE_MAX,
    LIMITS,
    PROMPT_MAX_CHARS,
    TEMPERATURE_MAX,
    TOP_K_MAX,
    GenerationRequest,
)
from services.validation import CONTINUE_MIN_SECONDS, validate
from ui import form_rules
from ui.form_events import continuation_updates
from ui.form_rules import USE_CONTINUATION, USE_MELODY, FormValues, request_values
from ui.formatting import card_html, errors_html, status_html
from ui.identity import api_visitor, ensure_identity, is_identity, new_identity, page_visitor
from ui.kinds import entry_label
from ui.track import track_facts_html

HOSTILE = '<img src=x onerror="alert(1)"> & "quotes" ${1+1}'


def test_user_text_is_escaped_everywhere_it_is_shown(tmp_path: Path) -> None:
    card = card_html(
        {"id": "r1", "prompt": HOSTILE, "status": "failed", "error": HOSTILE, "badge": HOSTILE}
    )
    errors = errors_html([FieldError("prompt", HOSTILE)])
    status = status_html("failed", error=HOSTILE)
    with Library(tmp_path) as library:
        record = library.create_pending(
            None, {"prompt": HOSTILE, "model_version": HOSTILE}, prediction_id='"><script>'
        )
    facts = track_facts_html(record, "https://api.replicate.com")
    for html in (card, errors, status, facts):
        assert "<img" not in html and "<script>" not in html
    # A picker's label is plain text (Gradio escapes it) and names no internal kind or id.
    assert record.id[:6] not in entry_label(record)
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; &quot;quotes&quot;" in card


def test_a_shared_deployment_never_lists_everything() -> None:
    mine = new_identity()
    # local install: one user sees all
    assert page_visitor(False, "anything", behind_proxy=False).owner is None
    assert page_visitor(True, mine, behind_proxy=False).owner == mine
    for forged in (None, "", "x", "0" * 32, mine.upper() + "z"):
        owner = page_visitor(True, forged, behind_proxy=False).owner
        assert owner is not None and is_identity(owner) and owner != forged
    assert ensure_identity(mine) == mine
    first = api_visitor(True, behind_proxy=False).owner
    second = api_visitor(True, behind_proxy=False).owner
    assert first and second and first != second
    assert api_visitor(False, behind_proxy=False).owner is None


def test_the_form_sends_only_what_applies() -> None:
    melody = request_values(
        FormValues.of(
            prompt="p",
            input_audio="/tmp/clip.wav",
            continuation=USE_MELODY,
            continuation_start=3,
            continuation_end=5,
            to_end=False,
            random_seed=True,
            seed=77,
        )
    )
    assert melody["continuation"] is False
    assert melody["continuation_start"] == 0 and melody["continuation_end"] is None
    assert melody["seed"] is None
    continuing = request_values(
        FormValues.of(
            input_audio="/tmp/clip.wav",
            continuation=USE_CONTINUATION,
            continuation_start=3,
            continuation_end=5,
            to_end=False,
            random_seed=False,
            seed=77,
        )
    )
    assert continuing["continuation"] is True
    assert (continuing["continuation_start"], continuing["continuation_end"]) == (3, 5)
    assert continuing["seed"] == 77
    # Without a clip, "continue" cannot apply and is not sent.
    no_clip = request_values(FormValues.of(prompt="p", continuation=USE_CONTINUATION))
    assert no_clip["continuation"] is False and no_clip["input_audio"] is None
    assert GenerationRequest.parse(no_clip).prompt == "p"


def test_controls_that_cannot_apply_say_why() -> None:
    assert not form_rules.mbd_state("stereo-large").interactive
    assert form_rules.mbd_state("large").interactive
    text_only = form_rules.audio_use_state(True, "large", USE_MELODY)
    assert not text_only.interactive and text_only.value == USE_CONTINUATION
    assert "can't follow a melody" in text_only.info
    assert not form_rules.audio_use_state(False, "melody-large", USE_MELODY).interactive
    assert form_rules.clip_bounds(6.2) == (6, 7)
    assert form_rules.duration_limits(False, 50)[:2] == (30, 30)
    assert form_rules.duration_limits(True, 50)[:2] == (300, 50)
    assert form_rules.continue_plan(8.0) == (0, 16)
    assert form_rules.continue_plan(25.0) == (15, 18)


def _applied(slider: gr.Slider, update: dict) -> gr.Slider:
    """The slider after an update, rebuilt as Gradio rebuilds it (which checks its range)."""
    props = {k: v for k, v in update.items() if k != "__type__"}
    value = props.pop("value", slider.value)
    rebuilt = gr.Slider(**{**slider.constructor_args, **props, "value": value, "render": False})
    rebuilt.preprocess(value)  # raises if the value falls outside the range
    return rebuilt


@pytest.mark.parametrize("seconds", [0.02, 0.4, 0.99, 1.0, 1.01, 1.2, 1.6, 2.0, 6.2])
@pytest.mark.parametrize("to_end", [True, False])
def test_a_short_clip_never_breaks_the_start_and_end_sliders(seconds, to_end):
    start = gr.Slider(0, 30, value=3, step=1, render=False)
    end = gr.Slider(0, 30, value=30, step=1, render=False)
    start_update, end_update, to_end_update = continuation_updates(
        "/tmp/clip.wav", USE_CONTINUATION, seconds, 3, 30, to_end
    )
    new_start, new_end = _applied(start, start_update), _applied(end, end_update)
    assert new_start.minimum < new_start.maximum and new_end.minimum < new_end.maximum
    assert to_end_update["interactive"] is True
    if seconds < 1 + CONTINUE_MIN_SECONDS:  # only a start of 0 leaves enough: held there
        assert start_update["interactive"] is False and start_update["value"] == 0
        assert "only" in start_update["info"] and "continued from its start" in start_update["info"]
        assert form_rules.start_choosable(seconds) is False
    else:
        assert start_update["interactive"] is True
        assert form_rules.start_choosable(seconds) is True
    # Whatever the page can then send is within the clip, and so accepted.
    chosen_start = new_start.value if start_update["interactive"] else 0
    chosen_start = min(chosen_start, new_start.maximum)
    request = request_values(
        FormValues.of(
            input_audio="/tmp/clip.wav",
            continuation=USE_CONTINUATION,
            duration=8,
            continuation_start=chosen_start,
            continuation_end=new_end.value,
            to_end=True,
        )
    )
    assert validate(request, seconds).continuation_start < seconds


def test_a_run_of_one_second_or_less_can_be_continued_from_the_history():
    assert form_rules.clip_bounds(0.5) == (1, 1)
    assert form_rules.clip_bounds(1.0) == (1, 1)
    assert form_rules.clip_bounds(1.5) == (1, 2)
    assert form_rules.clip_bounds(None) == (30, 30)
    start, duration = form_rules.continue_plan(0.5)
    assert (start, duration) == (0, 9)
    gr.Slider(0, form_rules.clip_bounds(0.5)[0], value=start, render=False)  # no error


def test_the_page_takes_its_ranges_from_the_request_limits():
    from ui.inputs import TEMPERATURE_STEP, build_form

    with gr.Blocks():
        form = build_form()
    sliders = {
        name: form.inputs[name]
        for name in ("duration", "top_k", "top_p", "temperature", "classifier_free_guidance")
    }
    assert (sliders["duration"].minimum, sliders["duration"].maximum) == (
        LIMITS["duration"].low,
        30,
    )
    assert form_rules.duration_limits(True, 8)[0] == DURATION_MAX
    assert sliders["top_k"].maximum == TOP_K_MAX
    assert sliders["top_p"].maximum == LIMITS["top_p"].high
    assert sliders["temperature"].minimum == TEMPERATURE_STEP > 0
    assert sliders["temperature"].maximum == TEMPERATURE_MAX
    assert sliders["classifier_free_guidance"].maximum == GUIDANCE_MAX
    assert form.inputs["prompt"].max_length == PROMPT_MAX_CHARS
    # Every end of every range is a value the request accepts.
    for name, slider in sliders.items():
        for value in (slider.minimum, slider.maximum):
            assert getattr(GenerationRequest.parse({"prompt": "x", name: value}), name) == value
    long_max = form_rules.duration_limits(True, 8)[0]
    longest = GenerationRequest.parse({"prompt": "x" * PROMPT_MAX_CHARS, "duration": long_max})
    assert (len(longest.prompt), longest.duration) == (PROMPT_MAX_CHARS, long_max)
