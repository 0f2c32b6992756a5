"""The page's rules that need no browser: escaping, identities, the form -> request mapping."""

from __future__ import annotations

from services.errors import FieldError
from services.validation import parse_request
from ui import form_rules
from ui.form_rules import USE_CONTINUATION, USE_MELODY, FormValues, request_values
from ui.formatting import card_html, errors_html, facts_html, status_html
from ui.identity import api_owner, ensure_identity, is_identity, new_identity, owner_for

HOSTILE = '<img src=x onerror="alert(1)"> & "quotes" ${1+1}'


def test_user_text_is_escaped_everywhere_it_is_shown() -> None:
    card = card_html({"id": "r1", "prompt": HOSTILE, "status": "failed", "error": HOSTILE})
    errors = errors_html([FieldError("prompt", HOSTILE)])
    status = status_html("failed", error=HOSTILE)
    facts = facts_html({"prediction_id": '"><script>', "model_version": HOSTILE})
    for html in (card, errors, status, facts):
        assert "<img" not in html and "<script>" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; &quot;quotes&quot;" in card


def test_a_shared_deployment_never_lists_everything() -> None:
    mine = new_identity()
    assert owner_for(False, "anything") is None  # local install: one user sees all
    assert owner_for(True, mine) == mine
    for forged in (None, "", "x", "0" * 32, mine.upper() + "z"):
        owner = owner_for(True, forged)
        assert owner is not None and is_identity(owner) and owner != forged
    assert ensure_identity(mine) == mine
    first, second = api_owner(True), api_owner(True)
    assert first and second and first != second
    assert api_owner(False) is None


def test_the_form_sends_only_what_applies() -> None:
    melody = request_values(
        FormValues(
            prompt="p",
            input_audio="/tmp/clip.wav",
            audio_use=USE_MELODY,
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
        FormValues(
            input_audio="/tmp/clip.wav",
            audio_use=USE_CONTINUATION,
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
    no_clip = request_values(FormValues(prompt="p", audio_use=USE_CONTINUATION))
    assert no_clip["continuation"] is False and no_clip["input_audio"] is None
    assert parse_request(no_clip).prompt == "p"


def test_controls_that_cannot_apply_say_why() -> None:
    assert not form_rules.mbd_state("stereo-large").interactive
    assert form_rules.mbd_state("large").interactive
    text_only = form_rules.audio_use_state(True, "large", USE_MELODY)
    assert not text_only.interactive and text_only.value == USE_CONTINUATION
    assert "can't follow a melody" in text_only.info
    assert not form_rules.audio_use_state(False, "melody-large", USE_MELODY).interactive
    assert form_rules.clip_bounds(6.2) == (6, 7)
    assert form_rules.duration_limits(False, 50)[:2] == (30, 30)
    assert form_rules.duration_limits(True, 50)[:2] == (120, 50)
    assert form_rules.continue_plan(8.0) == (0, 16)
    assert form_rules.continue_plan(25.0) == (15, 18)
