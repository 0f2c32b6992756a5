"""One schema: `services.musicgen.GenerationRequest` declares meta/musicgen's inputs once, and
validation, the API (and so MCP), its help, the page and the emulator's input check follow it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from services.errors import RequestInvalid
from services.input_help import help_text
from services.musicgen import (
    BY_NAME,
    INPUT_NAMES,
    INPUTS,
    LIMITS,
    GenerationRequest,
    replicate_input_schema,
)
from tests.emulator.schema import validate_input, with_defaults
from ui.form_rules import FormValues, form_values, page_values, request_values

ROOT = Path(__file__).resolve().parent.parent

# meta/musicgen's inputs as REPLICATE.md documents them (cog-musicgen predict.py at 647e795):
# name -> (JSON type, default or None for "none", allowed words, minimum).
DOCUMENTED: dict[str, tuple[str, Any, list[str] | None, int | None]] = {
    "model_version": (
        "string",
        "stereo-melody-large",
        ["stereo-melody-large", "stereo-large", "melody-large", "large"],
        None,
    ),
    "prompt": ("string", None, None, None),
    "input_audio": ("string", None, None, None),
    "duration": ("integer", 8, None, None),
    "continuation": ("boolean", False, None, None),
    "continuation_start": ("integer", 0, None, 0),
    "continuation_end": ("integer", None, None, 0),
    "multi_band_diffusion": ("boolean", False, None, None),
    "normalization_strategy": ("string", "loudness", ["loudness", "clip", "peak", "rms"], None),
    "top_k": ("integer", 250, None, None),
    "top_p": ("number", 0.0, None, None),
    "temperature": ("number", 1.0, None, None),
    "classifier_free_guidance": ("integer", 3, None, None),
    "output_format": ("string", "wav", ["wav", "mp3"], None),
    "seed": ("integer", None, None, None),
}


def test_the_json_schema_is_the_models_documented_input() -> None:
    schema = replicate_input_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    properties = schema["properties"]
    assert set(properties) == set(DOCUMENTED)
    for name, (kind, default, enum, minimum) in DOCUMENTED.items():
        prop = properties[name]
        assert prop["type"] == kind, name
        assert prop.get("default") == default and ("default" in prop) == (default is not None)
        assert prop.get("enum") == enum, name
        assert prop.get("minimum") == minimum, name
        # The model's own schema, not the studio's: no maximum anywhere (no duration bound).
        assert "maximum" not in prop and "exclusiveMinimum" not in prop, name
        assert prop["description"] == BY_NAME[name].description
    assert properties["input_audio"]["format"] == "uri"
    # The request's own defaults are the model's.
    request = GenerationRequest()
    for name, prop in properties.items():
        if "default" in prop:
            assert getattr(request, name) == prop["default"], name


def test_the_emulator_takes_what_the_model_takes_while_the_studio_refuses_more() -> None:
    """Above the studio's limits but within the model's: Replicate runs it, the studio refuses."""
    beyond = {
        "prompt": "a" * 1500,
        "duration": 500,
        "top_k": 2000,
        "temperature": 0,
        "classifier_free_guidance": 50,
        "top_p": 1.5,
        "seed": 2**40,
    }
    assert validate_input(beyond) == []
    with pytest.raises(RequestInvalid) as refused:
        GenerationRequest.parse(beyond)
    assert {e.field for e in refused.value.errors} == set(beyond)
    # Outside the model's own constraints: both refuse.
    for bad, field in (
        ({"continuation_start": -1}, "input.continuation_start"),
        ({"duration": 8.5}, "input.duration"),
        ({"output_format": "flac"}, "input.output_format"),
        ({"temperture": 1}, "input.temperture"),
    ):
        assert [p.field for p in validate_input(bad)] == [field]
    # What a request sends is what the emulator (and the JSON schema) accepts.
    payload = GenerationRequest(prompt="x", seed=5, continuation_end=3).to_api_input()
    assert validate_input(payload) == []
    assert with_defaults(payload)["top_k"] == 250


@pytest.mark.parametrize(
    "payload",
    [
        {"duration": 8},
        {"duration": "8"},
        {"continuation_end": -1},
        {"normalization_strategy": "peak", "top_p": 0.5},
        {"normalization_strategy": "loud"},
        {"input_audio": "https://example.com/a.wav"},
        {"classifier_free_guidance": 3.5},
        {"unknown": 1},
    ],
)
def test_the_emulator_checks_exactly_the_json_schema(payload: dict[str, Any]) -> None:
    """The emulator's 422s agree with a JSON Schema validator over the produced schema."""
    schema = {**replicate_input_schema(), "additionalProperties": False}
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    assert bool(validate_input(payload)) == (not validator.is_valid(payload))


def test_studio_limits_lie_within_the_models_own() -> None:
    for spec in INPUTS:
        if spec.limit is not None and spec.minimum is not None:
            assert spec.limit.low >= spec.minimum, spec.name
        if spec.limit is not None and spec.maximum is not None:
            assert spec.limit.high <= spec.maximum, spec.name
        if spec.kind in ("whole", "number") and spec.default is not None and spec.limit:
            assert spec.limit.allows(spec.default), spec.name
    # The studio's limits are stricter where the model has none.
    assert (
        LIMITS["duration"].high == 300
        and "maximum" not in replicate_input_schema()["properties"]["duration"]
    )


def test_replace_checks_like_a_new_request_and_old_rows_load() -> None:
    request = GenerationRequest(prompt="x", seed=7)
    assert request.replace(seed=0).seed is None  # 0 and -1 mean random
    with pytest.raises(ValueError):
        request.replace(continuation_start=-3)
    with pytest.raises(ValueError):
        request.replace(not_an_input=1)
    # A row written before a field changed shape, or with keys this version does not know.
    old = {**request.to_dict(), "prompt": None, "retired_input": 1, "duration": 12}
    loaded = GenerationRequest.from_dict(old)
    assert loaded.prompt == "" and loaded.duration == 12 and loaded.seed == 7
    assert GenerationRequest.from_dict(request.to_dict()) == request


def test_every_model_input_has_one_control_in_the_schemas_order() -> None:
    """The form, its handlers' input list and the request all go by the schema's fields."""
    import gradio as gr

    from ui.inputs import build_form

    with gr.Blocks():
        form = build_form()
    assert list(form.inputs) != list(INPUT_NAMES)  # the layout places them in its own order...
    assert sorted(form.inputs) == sorted(INPUT_NAMES)  # ...each input once
    components = form.components()
    assert components[: len(INPUT_NAMES)] == [form.inputs[name] for name in INPUT_NAMES]
    assert len(set(map(id, components))) == len(components)
    assert form.extras == ()  # today every input has its place in the layout
    assert set(request_values(FormValues())) == set(INPUT_NAMES)
    assert GenerationRequest.parse(request_values(FormValues())) == GenerationRequest()


# Every input away from its default (and the clip continued from 2 s to 6 s).
REUSED = GenerationRequest(
    prompt="dub techno",
    input_audio="/tmp/clip.wav",
    duration=45,
    continuation=True,
    continuation_start=2,
    continuation_end=6,
    model_version="melody-large",
    multi_band_diffusion=True,
    normalization_strategy="peak",
    output_format="mp3",
    seed=1234,
    temperature=0.7,
    top_k=100,
    top_p=0.5,
    classifier_free_guidance=5,
)


def test_reusing_a_takes_settings_puts_every_input_back() -> None:
    """A past take's request, shown in the form and read back, is the same request: every
    field of the schema makes the round trip without being listed."""
    assert {name for name in INPUT_NAMES if getattr(REUSED, name) == BY_NAME[name].default} == set()
    page = page_values(REUSED)
    assert page.long_mode and not page.to_end and not page.random_seed
    assert GenerationRequest.parse(request_values(page)) == REUSED
    # Through the handlers' input list, in the order the page sends it.
    assert request_values(form_values(page.ordered())) == request_values(page)
    # A take left at its defaults: random seed, the clip up to its end.
    plain = GenerationRequest(prompt="x", input_audio="/tmp/clip.wav", continuation=True)
    assert GenerationRequest.parse(request_values(page_values(plain))) == plain
    at_zero = REUSED.replace(continuation_start=0, continuation_end=0)  # an end, not "none"
    assert GenerationRequest.parse(request_values(page_values(at_zero))) == at_zero


def test_reuse_settings_sets_every_control_of_the_form() -> None:
    """ "Reuse settings" on a past take: each input's control gets the take's value."""
    import gradio as gr

    from ui.inputs import build_form
    from ui.reuse import Reuse

    with gr.Blocks():
        form = build_form()
        reuse = Reuse(form, gr.State(None), gr.HTML())
    updates = reuse.settings({"request": REUSED.to_dict(), "input_audio_path": "/kept/clip.wav"})
    shown = {
        name: value.get("value") if isinstance(value, dict) else value
        for name, value in ((name, updates[form.inputs[name]]) for name in INPUT_NAMES)
    }
    assert shown == {**page_values(REUSED).inputs, "input_audio": "/kept/clip.wav"}
    switches = (updates[form.long_mode], updates[form.to_end], updates[form.random_seed])
    assert switches == (True, False, False)


ADDED_INPUT = """
    bpm: Annotated[
        int,
        Input("Tempo", Limit(40, 200), "Most music sits between 60 and 180 bpm."),
    ] = Field(120, ge=1, description="The tempo in beats per minute.")
    swing: Annotated[bool, Input("Swing")] = Field(False, description="Swing the eighths.")
"""
# bpm's place in the layout (swing has none: it gets a control of its kind, under "More inputs").
ADDED_PLACE = """            inputs["bpm"] = control("bpm", elem_id="bpm", min_width=220)
"""

CHECK_ADDED_INPUT = """
import inspect, json
import gradio as gr
from services.errors import RequestInvalid
from services.input_help import help_text
from services.musicgen import LIMITS
from services.musicgen import GenerationRequest
from tests.emulator.schema import INPUT_SCHEMA, validate_input, with_defaults
from ui.api import GenerateApi, REQUEST_PARAMETERS, model_input_components

out = {}
out["params"] = list(REQUEST_PARAMETERS)
out["signature"] = list(inspect.signature(GenerateApi.generate).parameters)
out["doc"] = "bpm: The tempo in beats per minute." in (GenerateApi.generate.__doc__ or "")
out["help"] = help_text("bpm")
with gr.Blocks():
    out["components"] = [c.label for c in model_input_components()]
out["schema"] = INPUT_SCHEMA["bpm"]
out["emulator_refuses"] = [p.field for p in validate_input({"bpm": 0})]
out["emulator_takes"] = [p.field for p in validate_input({"bpm": 400})]
out["emulator_default"] = with_defaults({})["bpm"]
try:
    GenerationRequest.parse({"prompt": "x", "bpm": 400})
except RequestInvalid as err:
    out["refusal"] = [str(e) for e in err.errors]
out["parsed"] = GenerationRequest.parse({"prompt": "x", "bpm": "90"}).bpm
out["sent"] = GenerationRequest(prompt="x", bpm=90).to_api_input()["bpm"]
from ui.form_rules import FormValues, form_values, request_values
from ui.inputs import build_form
from ui.reuse import Reuse
with gr.Blocks():
    form = build_form()
    reuse = Reuse(form, gr.State(None), gr.HTML())
out["page_extras"] = list(form.extras)
out["page_controls"] = {
    name: [type(form.inputs[name]).__name__, form.inputs[name].label, form.inputs[name].value]
    for name in ("bpm", "swing")
}
out["page_order"] = [c.label for c in form.components()[-6:-3]]
page = FormValues.of(bpm=96, swing=True).ordered()
out["page_sent"] = [request_values(form_values(page))[name] for name in ("bpm", "swing")]
out["page_default"] = [request_values(FormValues())[name] for name in ("bpm", "swing")]
updates = reuse.settings({"request": {"prompt": "x", "bpm": 90, "swing": True}})
out["reused"] = [updates[form.inputs[name]] for name in ("bpm", "swing")]
print(json.dumps(out))
"""


def test_adding_an_input_is_one_edit(tmp_path: Path) -> None:
    """Declare two more fields on a copy of the tree, and give one a place in the layout: every
    derived place carries both (the API, its help, validation, the emulator, the form, the
    handlers' values and reuse), with no other edit."""
    copy = tmp_path / "tree"
    skip = shutil.ignore_patterns("__pycache__", "data", "*.wav", "*.mp3")
    for part in ("services", "ui"):
        shutil.copytree(ROOT / part, copy / part, ignore=skip)
    (copy / "tests").mkdir()
    (copy / "tests" / "__init__.py").write_text("")
    shutil.copytree(ROOT / "tests" / "emulator", copy / "tests" / "emulator", ignore=skip)
    module = copy / "services" / "musicgen.py"
    source = module.read_text()
    anchor = '    @model_validator(mode="before")'
    assert source.count(anchor) == 1
    module.write_text(source.replace(anchor, ADDED_INPUT.lstrip("\n") + "\n" + anchor))
    layout = copy / "ui" / "inputs.py"
    source = layout.read_text()
    anchor = '            inputs["top_k"] = control('
    assert source.count(anchor) == 1
    layout.write_text(source.replace(anchor, ADDED_PLACE + anchor))

    result = subprocess.run(
        [sys.executable, "-c", CHECK_ADDED_INPUT],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(copy), "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["params"][-2:] == ["bpm", "swing"]
    assert out["signature"][-4:] == ["bpm", "swing", "engine", "api_token"]
    assert out["doc"]
    assert out["help"] == ("The tempo in beats per minute. It is a whole number from 40 to 200.")
    assert out["components"][-3:] == ["bpm", "swing", "engine"]
    # The page: bpm where the layout put it, swing a control of its kind under "More inputs";
    # both in the handlers' input list in the schema's order, sent and reused by their names.
    assert out["page_extras"] == ["swing"]
    assert out["page_controls"] == {
        "bpm": ["Slider", "Tempo", 120],
        "swing": ["Checkbox", "Swing", False],
    }
    assert out["page_order"] == ["Guidance", "Tempo", "Swing"]
    assert out["page_sent"] == [96, True] and out["page_default"] == [120, False]
    assert out["reused"] == [90, True]
    assert out["schema"] == {
        "title": "Bpm",
        "type": "integer",
        "description": "The tempo in beats per minute.",
        "minimum": 1,
        "default": 120,
    }
    # The emulator plays the model (ge=1); the studio's own limit (40..200) is stricter.
    assert out["emulator_refuses"] == ["input.bpm"] and out["emulator_takes"] == []
    assert out["emulator_default"] == 120
    assert out["refusal"] == [
        "bpm: Tempo must be a whole number from 40 to 200 (you entered 400). "
        "Most music sits between 60 and 180 bpm."
    ]
    assert out["parsed"] == 90 and out["sent"] == 90


def test_the_api_help_says_what_each_input_means_and_takes() -> None:
    """What an API caller or an MCP client reads for a parameter: its meaning, then its range
    or choices, as the musician's words and the studio's own limits."""
    assert help_text("duration") == (
        "Length of the result in seconds (with continuation: including the clip). "
        "It is a whole number of seconds from 1 to 300."
    )
    assert help_text("output_format") == "The file format of the result. One of: wav, mp3."
    assert help_text("prompt").endswith("At most 1000 characters.")
    assert help_text("input_audio").endswith("At most 10 minutes long.")
    assert help_text("temperature").endswith("It is a number above 0 and at most 5.")


def test_the_page_controls_read_the_declaration() -> None:
    import gradio as gr

    from ui.inputs import build_form

    with gr.Blocks():
        form = build_form()
    for name in ("top_k", "top_p", "temperature", "classifier_free_guidance"):
        spec, slider = BY_NAME[name], form.inputs[name]
        assert spec.limit is not None
        assert (slider.label, slider.info, slider.step) == (
            spec.page_label,
            spec.page_info,
            spec.input.step,
        )
        assert slider.maximum == spec.limit.high and slider.value == spec.default
        assert spec.limit.allows(slider.minimum), name
    controls = form.inputs
    assert controls["classifier_free_guidance"].label == "Guidance"  # the page's shorter label
    assert controls["duration"].minimum == LIMITS["duration"].low
    assert controls["prompt"].max_length == LIMITS["prompt"].high
    for name in ("output_format", "normalization_strategy", "model_version"):
        assert [value for _, value in controls[name].choices] == list(BY_NAME[name].choices)
    for name in INPUT_NAMES:
        if name != "continuation":  # the "Use the clip as" choice, in the page's words
            assert controls[name].label == BY_NAME[name].page_label, name
    assert controls["seed"].info == BY_NAME["seed"].page_info
