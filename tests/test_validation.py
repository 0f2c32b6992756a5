"""The request's validation: every rule, its message, and the API input it leads to."""

from __future__ import annotations

import json
import re

import pytest

from services.errors import FieldError, RequestInvalid
from services.musicgen import GenerationRequest
from services.validation import (
    check_request,
    is_long,
    validate,
    warnings,
)

CLIP = "/clips/riff.wav"


def refusals(raw: dict, audio_seconds: float | None = None) -> dict[str, str]:
    """Validate and return {field: message}; fails the test if nothing is refused."""
    with pytest.raises(RequestInvalid) as caught:
        validate(raw, audio_seconds)
    errors = caught.value.errors
    assert len({e.field for e in errors}) == len(errors), errors
    return {e.field: e.message for e in errors}


def only(raw: dict, audio_seconds: float | None = None) -> tuple[str, str]:
    found = refusals(raw, audio_seconds)
    assert len(found) == 1, found
    return next(iter(found.items()))


# -- loose values from a form or the Gradio API --------------------------------------------


def test_empty_form_takes_the_models_defaults():
    request = GenerationRequest.parse({"prompt": "lofi beat"})
    assert request == GenerationRequest(prompt="lofi beat")
    blank = dict.fromkeys(GenerationRequest.model_fields) | {"prompt": "x", "seed": ""}
    assert GenerationRequest.parse(blank) == GenerationRequest(prompt="x")


def test_loose_values_are_coerced():
    request = GenerationRequest.parse(
        {
            "prompt": "ambient pads",
            "input_audio": {"path": CLIP, "meta": {"_type": "gradio.FileData"}},
            "duration": 12.0,
            "continuation": "true",
            "continuation_start": "2",
            "continuation_end": "10.0",
            "model_version": " Melody-Large ",
            "multi_band_diffusion": "on",
            "normalization_strategy": "PEAK",
            "top_k": "0",
            "top_p": "0.9",
            "temperature": 1,
            "classifier_free_guidance": 5.0,
            "output_format": "mp3",
            "seed": "42",
        }
    )
    assert request == GenerationRequest(
        prompt="ambient pads",
        input_audio=CLIP,
        duration=12,
        continuation=True,
        continuation_start=2,
        continuation_end=10,
        model_version="melody-large",
        multi_band_diffusion=True,
        normalization_strategy="peak",
        top_k=0,
        top_p=0.9,
        temperature=1.0,
        classifier_free_guidance=5,
        output_format="mp3",
        seed=42,
    )
    assert type(request.duration) is int and type(request.classifier_free_guidance) is int


@pytest.mark.parametrize("value", [None, "", "  ", -1, "-1", -1.0, 0, "0"])
def test_seed_empty_or_minus_one_means_random(value):
    assert GenerationRequest.parse({"prompt": "x", "seed": value}).seed is None


@pytest.mark.parametrize("value", [None, "", -1, "-1"])
def test_continuation_end_empty_or_minus_one_means_end_of_clip(value):
    assert (
        GenerationRequest.parse({"prompt": "x", "continuation_end": value}).continuation_end is None
    )


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        (
            "duration",
            0,
            "Duration must be a whole number of seconds from 1 to 300 (you entered 0). 8 s is",
        ),
        ("duration", 8.5, "(you entered 8.5)"),
        ("duration", "ten", 'whole number of seconds from 1 to 300 (you entered "ten")'),
        ("duration", -4, "from 1 to 300"),
        ("duration", 301, "from 1 to 300 (you entered 301)"),
        ("duration", 10**12, "(you entered 1000000000000)"),
        ("top_k", -1, "Top-k must be a whole number from 0 to 1000 (you entered -1)"),
        ("top_k", 2.5, "Top-k must be a whole number"),
        ("top_k", 1001, "from 0 to 1000"),
        ("top_p", 1.5, "Top-p must be a number from 0 to 1 (you entered 1.5)"),
        ("top_p", -0.1, "Top-p must be a number from 0 to 1"),
        ("top_p", "a lot", "Top-p must be a number"),
        ("temperature", 0, "Temperature must be a number above 0 and at most 5 (you entered 0)"),
        ("temperature", 5.01, "above 0 and at most 5 (you entered 5.01)"),
        ("temperature", -1.0, "above 0"),
        ("temperature", "nan", "above 0"),
        ("classifier_free_guidance", 2.5, "Classifier-free guidance must be a whole number"),
        ("classifier_free_guidance", -1, "from 0 to 20 (you entered -1)"),
        ("classifier_free_guidance", 21, "whole number from 0 to 20 (you entered 21)"),
        ("continuation_start", 601, "whole number of seconds from 0 to 600"),
        ("continuation_end", 10**30, "(you entered a far too large number)"),
        (
            "prompt",
            "x" * 1001,
            "Prompt must be text of at most 1000 characters (you entered 1001 characters",
        ),
        ("seed", 10**400, "from 1 to 4294967295 (you entered a far too large number)"),
        ("continuation_start", -2, "Continuation start must be a whole number of seconds"),
        ("continuation_start", 1.5, "(you entered 1.5)"),
        ("continuation_end", -5, "Continuation end must be a whole number of seconds"),
        ("continuation_end", 3.5, "Leave it empty to use the clip up to its end."),
        ("seed", 1.5, "Seed must be a whole number"),
        ("seed", "abc", "Leave it empty (or enter -1) for a random seed."),
        ("seed", -7, "Seed must be a whole number from 1 to 4294967295 (you entered -7)"),
        ("seed", 2**32, "from 1 to 4294967295"),
        ("model_version", "huge", "Model must be stereo-melody-large, stereo-large, melody-large"),
        ("normalization_strategy", "max", "Normalization must be loudness, clip, peak or rms"),
        ("output_format", "ogg", 'Output format must be wav or mp3 (you entered "ogg")'),
        ("continuation", "maybe", "Continuation must be on or off"),
        ("multi_band_diffusion", 2, "Multi-band diffusion must be on or off"),
        ("duration", True, "(you entered on)"),
        ("prompt", 42, "Prompt must be text"),
    ],
)
def test_each_bad_value_is_refused_with_its_field_named(field, value, says):
    name, message = only({"prompt": "x", field: value})
    assert name == field
    assert says in message


def test_every_problem_is_reported_at_once():
    found = refusals(
        {
            "prompt": "",
            "duration": 0,
            "top_p": "1.5",
            "temperature": 0,
            "seed": "abc",
            "model_version": "huge",
            "continuation": True,
        }
    )
    assert set(found) == {
        "duration",
        "top_p",
        "temperature",
        "seed",
        "model_version",
        "prompt",
        "input_audio",
    }
    assert "add a clip, or turn Continuation off" in found["input_audio"]


def test_the_error_text_lists_each_field_on_its_own_line():
    with pytest.raises(RequestInvalid) as caught:
        GenerationRequest.parse({"duration": 0, "top_k": -1})
    lines = str(caught.value).splitlines()
    assert [line.split(":")[0] for line in lines] == ["duration", "top_k"]
    assert caught.value.for_field("top_k")[0].message.startswith("Top-k must be")


def test_a_request_object_is_checked_too():
    with pytest.raises(ValueError, match="duration"):
        GenerationRequest(prompt="x", duration=0, temperature=-1)  # refused as it is built
    with pytest.raises(RequestInvalid) as caught:
        validate(GenerationRequest(prompt="x", input_audio=CLIP, continuation_start=9), 5.0)
    assert {e.field for e in caught.value.errors} == {"continuation_start"}


# -- the model's own rules -----------------------------------------------------------------


def test_a_prompt_or_an_input_audio_is_needed():
    field, message = only({"prompt": "   "})
    assert field == "prompt"
    assert "Describe the music you want in the prompt, or give an input audio clip" in message
    assert validate({"input_audio": CLIP}, 10.0).input_audio == CLIP


def test_continuation_needs_input_audio():
    field, message = only({"prompt": "x", "continuation": True})
    assert field == "input_audio"
    assert "Continuation extends an input audio clip, but none was given" in message


@pytest.mark.parametrize("model", ["stereo-large", "large"])
def test_a_melody_needs_a_melody_model(model):
    field, message = only({"prompt": "x", "input_audio": CLIP, "model_version": model}, 10.0)
    assert field == "model_version"
    assert f"The {model} model can't follow a melody" in message
    assert "stereo-melody-large or melody-large" in message
    assert "turn Continuation on" in message


@pytest.mark.parametrize("model", ["stereo-large", "large", "stereo-melody-large", "melody-large"])
def test_any_model_can_continue_a_clip(model):
    raw = {"input_audio": CLIP, "continuation": True, "duration": 20, "model_version": model}
    assert validate(raw, 10.0).model_version == model


@pytest.mark.parametrize("model", ["stereo-large", "stereo-melody-large"])
def test_multi_band_diffusion_needs_a_mono_model(model):
    field, message = only({"prompt": "x", "multi_band_diffusion": True, "model_version": model})
    assert field == "multi_band_diffusion"
    assert "only works with the mono models (melody-large, large)" in message
    assert f"{model} is stereo" in message


@pytest.mark.parametrize("model", ["melody-large", "large"])
def test_multi_band_diffusion_with_a_mono_model_is_fine(model):
    raw = {"prompt": "x", "multi_band_diffusion": True, "model_version": model}
    assert validate(raw).multi_band_diffusion is True


@pytest.mark.parametrize(("start", "end"), [(6, 4), (5, 5)])
def test_start_must_come_before_end(start, end):
    raw = {"input_audio": CLIP, "continuation_start": start, "continuation_end": end}
    field, message = only(raw, 10.0)
    assert field == "continuation_start"
    assert f"Continuation start ({start} s) must come before continuation end ({end} s)" in message


def test_start_and_end_are_ignored_without_a_clip():
    raw = {"prompt": "x", "continuation_start": 6, "continuation_end": 4}
    assert validate(raw).continuation_start == 6


def test_start_must_be_inside_the_clip():
    raw = {"input_audio": CLIP, "continuation_start": 12}
    field, message = only(raw, 9.46)
    assert field == "continuation_start"
    assert "Continuation start (12 s) is at or past the end of your clip" in message
    assert "only 9.46 s long. Pick a start below 9.46 s." in message


def test_end_must_be_inside_the_clip():
    raw = {"input_audio": CLIP, "continuation_end": 14}
    field, message = only(raw, 9.46)
    assert field == "continuation_end"
    assert "Continuation end (14 s) is past the end of your clip, which is only 9.46 s" in message
    assert "at most 10 s, or leave it empty" in message


def test_end_rounded_up_to_the_clips_whole_seconds_is_fine():
    # A 9.98 s recording: "10" is how a musician writes "the end" in whole seconds.
    assert validate({"input_audio": CLIP, "continuation_end": 10}, 9.98).continuation_end == 10


def test_clip_length_rules_wait_for_the_measured_length():
    raw = {"input_audio": CLIP, "continuation_start": 50, "continuation_end": 60}
    assert validate(raw, None).continuation_start == 50


def test_the_continued_part_must_be_shorter_than_the_duration():
    raw = {"input_audio": CLIP, "continuation": True, "duration": 8}
    field, message = only(raw, 10.0)
    assert field == "duration"
    assert "Duration is the total length of the result" in message
    assert "including the 10 s of your clip that it continues (from 0 s to the end" in message
    assert "Set Duration above 10 s" in message


def test_the_continued_part_uses_start_and_end():
    raw = {
        "input_audio": CLIP,
        "continuation": True,
        "duration": 5,
        "continuation_start": 2,
        "continuation_end": 8,
    }
    field, message = only(raw, 30.0)
    assert field == "duration"
    assert "the 6 s of your clip that it continues (from 2 s to 8 s)" in message
    assert validate(raw | {"duration": 7}, 30.0).duration == 7
    assert validate(raw | {"continuation_end": 6}, 30.0).duration == 5


def test_an_equal_length_leaves_no_room_and_is_refused():
    raw = {"input_audio": CLIP, "continuation": True, "duration": 10, "continuation_end": 10}
    assert only(raw, 30.0)[0] == "duration"
    assert validate(raw | {"duration": 11}, 30.0).duration == 11


def test_the_continued_part_is_cut_at_the_clips_end():
    raw = {"input_audio": CLIP, "continuation": True, "duration": 9, "continuation_end": 9}
    assert validate(raw, 8.6).duration == 9  # the model only takes 8.6 s of it


def test_melody_mode_has_no_length_rule():
    assert validate({"input_audio": CLIP, "duration": 5}, 60.0).duration == 5


def test_model_rules_and_value_errors_come_together():
    found = refusals(
        {
            "input_audio": CLIP,
            "model_version": "large",
            "multi_band_diffusion": True,
            "continuation_start": 20,
            "top_k": -3,
        },
        15.3,
    )
    assert set(found) == {"top_k", "model_version", "continuation_start"}


def test_a_refused_value_does_not_trigger_rules_built_on_its_default():
    # duration "abc" is refused; the continuation rule must not judge the default 8 instead.
    raw = {"input_audio": CLIP, "continuation": True, "duration": "abc"}
    assert set(refusals(raw, 10.0)) == {"duration"}


def test_check_request_returns_the_model_rules_only():
    request = GenerationRequest(input_audio=CLIP, model_version="large")
    assert [e.field for e in check_request(request, 10.0)] == ["model_version"]
    assert check_request(GenerationRequest(prompt="x"), None) == []
    assert all(isinstance(e, FieldError) for e in check_request(GenerationRequest(), None))


# -- warnings ------------------------------------------------------------------------------


def test_long_durations_are_allowed_with_a_warning():
    request = validate({"prompt": "x", "duration": 60})
    assert is_long(request)
    (note,) = warnings(request)
    assert "60 s" in note and "longer" in note and "less coherent" in note
    assert not is_long(GenerationRequest(duration=30))
    assert warnings(GenerationRequest(duration=30)) == []


# -- the API's input -----------------------------------------------------------------------


def test_api_input_has_no_nulls_and_whole_numbers_as_integers():
    payload = GenerationRequest(
        prompt="x", duration=8.0, classifier_free_guidance=3.0
    ).to_api_input()
    assert None not in payload.values()
    assert {"input_audio", "continuation_end", "seed"}.isdisjoint(payload)
    text = json.dumps(payload)
    for name in ("duration", "top_k", "classifier_free_guidance", "continuation_start"):
        assert type(payload[name]) is int, name
    assert re.search(r'"duration": 8[,}]', text)
    assert re.search(r'"classifier_free_guidance": 3[,}]', text)
    assert type(payload["top_p"]) is float and type(payload["temperature"]) is float


def test_api_input_with_every_input_set():
    request = validate(
        {
            "prompt": "edm",
            "input_audio": CLIP,
            "duration": "20",
            "continuation": True,
            "continuation_start": 1,
            "continuation_end": 5,
            "model_version": "melody-large",
            "multi_band_diffusion": True,
            "normalization_strategy": "rms",
            "top_k": 100,
            "top_p": 0.5,
            "temperature": 0.7,
            "classifier_free_guidance": 4,
            "output_format": "mp3",
            "seed": 1234,
        },
        10.0,
    )
    assert request.to_api_input("https://api.replicate.com/v1/files/abc") == {
        "prompt": "edm",
        "input_audio": "https://api.replicate.com/v1/files/abc",
        "duration": 20,
        "continuation": True,
        "continuation_start": 1,
        "continuation_end": 5,
        "model_version": "melody-large",
        "multi_band_diffusion": True,
        "normalization_strategy": "rms",
        "top_k": 100,
        "top_p": 0.5,
        "temperature": 0.7,
        "classifier_free_guidance": 4,
        "output_format": "mp3",
        "seed": 1234,
    }


def test_api_input_never_sends_an_empty_input_audio_or_prompt():
    payload = GenerationRequest(prompt="  ", input_audio="").to_api_input("")
    assert "input_audio" not in payload and "prompt" not in payload


@pytest.mark.parametrize("end", [None, -1])
def test_api_input_never_sends_continuation_end_minus_one(end):
    payload = GenerationRequest(prompt="x", continuation_end=end).to_api_input()
    assert "continuation_end" not in payload


def test_api_input_sends_an_end_of_zero():
    assert GenerationRequest(prompt="x", continuation_end=0).to_api_input()["continuation_end"] == 0


@pytest.mark.parametrize(("seed", "sent"), [(None, False), (-1, False), (0, False), (7, True)])
def test_api_input_sends_only_a_fixed_seed(seed, sent):
    payload = GenerationRequest(prompt="x", seed=seed).to_api_input()
    assert ("seed" in payload) is sent
    if sent:
        assert payload["seed"] == 7 and type(payload["seed"]) is int


def test_parsed_form_values_reach_the_api_as_integers():
    payload = GenerationRequest.parse(
        {"prompt": "x", "duration": 8.0, "seed": "9", "top_k": "250", "continuation_end": "3.0"}
    ).to_api_input()
    assert json.dumps(payload).count(".0") == 2  # only top_p 0.0 and temperature 1.0
    assert payload["duration"] == 8 and payload["seed"] == 9 and payload["continuation_end"] == 3


# -- the limits ----------------------------------------------------------------------------


def test_each_limit_itself_is_allowed():
    request = GenerationRequest.parse(
        {
            "prompt": "x" * 1000,
            "duration": 300,
            "top_k": 1000,
            "top_p": 1,
            "temperature": 5,
            "classifier_free_guidance": 20,
            "continuation_start": 600,
            "continuation_end": 600,
            "seed": 2**32 - 1,
        }
    )
    assert (request.duration, request.top_k, request.temperature) == (300, 1000, 5.0)
    assert (
        GenerationRequest.parse({"prompt": "x", "duration": 1, "temperature": 0.001}).duration == 1
    )


def test_a_clip_longer_than_ten_minutes_is_refused():
    assert validate({"prompt": "x", "input_audio": CLIP}, 600.0).input_audio == CLIP
    field, message = only({"prompt": "x", "input_audio": CLIP, "continuation_start": 500}, 600.5)
    assert field == "input_audio"
    assert message.startswith("This clip lasts more than 10 minutes, the limit for input audio.")


def test_a_clip_above_100_mb_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "huge.wav"
    with big.open("wb") as sparse:  # 100 MB + 1 byte without writing them
        sparse.truncate(100 * 1024 * 1024 + 1)
    field, message = only({"prompt": "x", "input_audio": str(big)}, 5.0)
    assert field == "input_audio"
    assert "above the 100 MB limit for input audio" in message
    assert str(tmp_path) not in message
