"""The request's limits as one schema: any input parses or is refused by name, before any call.

Property-based (hypothesis) over the schema in services/validation.py, then the same promise
through the generation service and through `/generate`, against the emulator on loopback:
a refused request costs nothing, because nothing reaches Replicate.
"""

from __future__ import annotations

import asyncio
import math
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.audio import CLIP_MAX_SECONDS
from services.errors import RequestInvalid
from services.generation import GenerationService
from services.library import Library
from services.musicgen import CHOICES, LIMITS, PROMPT_MAX_CHARS, SEED_MAX, GenerationRequest
from services.validation import validate
from tests.browser_support import (
    AppProcess,
    creates,
)
from tests.emulator import Emulator
from tests.support.services import make_service

FIELDS = list(GenerationRequest.model_fields)
NUMERIC = [name for name in LIMITS if name not in ("prompt", "input_audio")]

# -- what anyone may send: numbers in and out of range, words, None, switches, huge values ---

_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([0, 1, -1, 10**12, 10**400, 2**32, 2**32 - 1, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e3, max_value=1e3),
    st.sampled_from([0.0, 1e-9, 0.5, 1.0, 5.0, 5.000001, 300.0, 300.5, 1e308]),
)
_words = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "true", "off", "nan", "inf", "-1", "1e400", "8.0", "LOUDNESS "]),
    st.sampled_from([*CHOICES["model_version"], *CHOICES["normalization_strategy"], "mp3"]),
    _numbers.map(str),
    st.text(min_size=PROMPT_MAX_CHARS - 2, max_size=PROMPT_MAX_CHARS + 2, alphabet="ab "),
)
_anything = st.one_of(
    st.none(),
    st.booleans(),
    _numbers,
    _words,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.sampled_from(["path", "name", "x"]), st.text(max_size=5), max_size=2),
    st.binary(max_size=8),
)
raw_requests = st.dictionaries(
    st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), _anything, max_size=len(FIELDS) + 2
)
clip_seconds = st.one_of(st.none(), st.floats(min_value=0.01, max_value=4 * CLIP_MAX_SECONDS))


def _within_limits(request: GenerationRequest) -> None:
    """An accepted request holds only values inside the schema."""
    for name in NUMERIC:
        value = getattr(request, name)
        if value is None:  # random seed, end of the clip
            assert name in ("seed", "continuation_end")
            continue
        limit = LIMITS[name]
        assert limit.allows(value), (name, value)
        assert isinstance(value, int) if limit.whole else isinstance(value, float)
    assert isinstance(request.prompt, str) and len(request.prompt) <= PROMPT_MAX_CHARS
    for name, allowed in CHOICES.items():
        assert getattr(request, name) in allowed


def _says_what_is_allowed(refused: RequestInvalid) -> None:
    """Every refusal names a real field, and a range refusal says the range."""
    assert refused.errors
    for error in refused.errors:
        assert error.field in FIELDS, error
        assert error.message.strip()
        assert str(error).startswith(f"{error.field}: ")
        if error.field in NUMERIC and "must be" in error.message:
            assert LIMITS[error.field].words() in error.message, error
        if error.field in CHOICES and "must be" in error.message:
            assert all(choice in error.message for choice in CHOICES[error.field]), error


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=raw_requests, seconds=clip_seconds)
def test_any_input_parses_within_the_limits_or_is_refused_by_name(raw, seconds):
    try:
        request = validate(raw, seconds)
    except RequestInvalid as refused:
        _says_what_is_allowed(refused)
        return
    _within_limits(request)


@settings(max_examples=200, deadline=None)
@given(raw=raw_requests)
def test_parsing_alone_never_lets_a_value_past_the_limits(raw):
    try:
        request = GenerationRequest.parse(raw)
    except RequestInvalid as refused:
        _says_what_is_allowed(refused)
        return
    _within_limits(request)


def _near_edges(name: str) -> st.SearchStrategy[Any]:
    """Values at, just inside and just outside a field's range, as numbers or as text."""
    limit = LIMITS[name]
    step = 1 if limit.whole else 1e-6
    edges = [limit.low, limit.low + step, limit.high - step, limit.high, limit.high + step]
    edges += [limit.low - step, (limit.low + limit.high) / 2]
    values = st.sampled_from(edges)
    return st.one_of(values, values.map(str), values.map(float), st.none())


near_edge_requests = st.fixed_dictionaries(
    {"prompt": st.text(min_size=1, max_size=PROMPT_MAX_CHARS + 5, alphabet="ab ")},
    optional={
        **{name: _near_edges(name) for name in NUMERIC},
        **{name: st.sampled_from([*allowed, "other"]) for name, allowed in CHOICES.items()},
    },
)


@settings(max_examples=200, deadline=None)
@given(raw=near_edge_requests)
def test_values_near_the_edges_are_kept_exactly_inside(raw):
    try:
        request = GenerationRequest.parse(raw)
    except RequestInvalid as refused:
        _says_what_is_allowed(refused)
        for error in refused.errors:  # only what is really outside is refused
            value = raw[error.field]
            if error.field in NUMERIC and not isinstance(value, str):
                assert not LIMITS[error.field].allows(value) or (
                    LIMITS[error.field].whole and not float(value).is_integer()
                ), error
        return
    _within_limits(request)


def _just_outside(name: str) -> list[Any]:
    limit = LIMITS[name]
    step = 1 if limit.whole else 1e-6
    below = limit.low if limit.low_open else limit.low - step
    values = [limit.high + step, 10**12]
    if not (name == "continuation_end" and below == -1) and not (name == "seed" and below == 0):
        values.append(below)  # -1 ends at the clip's end, 0 is a random seed: both allowed
    if limit.whole:
        values.append(limit.low + 0.5)
    return values


@pytest.mark.parametrize(("name", "value"), [(n, v) for n in NUMERIC for v in _just_outside(n)])
def test_each_edge_is_refused_one_step_outside_with_the_range_named(name, value):
    with pytest.raises(RequestInvalid) as caught:
        GenerationRequest.parse({"prompt": "x", name: value})
    [error] = caught.value.errors
    assert error.field == name
    assert LIMITS[name].words() in error.message
    assert "(you entered " in error.message


@pytest.mark.parametrize("name", NUMERIC)
def test_each_edge_itself_is_allowed(name):
    limit = LIMITS[name]
    low = limit.low + 1e-6 if limit.low_open else limit.low
    for value in (low, limit.high):
        assert math.isclose(
            getattr(GenerationRequest.parse({"prompt": "x", name: value}), name), value
        )


def test_the_limits_are_the_ones_announced():
    assert (LIMITS["duration"].low, LIMITS["duration"].high) == (1, 300)
    assert LIMITS["temperature"].low_open and LIMITS["temperature"].high == 5
    assert (LIMITS["top_k"].low, LIMITS["top_k"].high) == (0, 1000)
    assert (LIMITS["top_p"].low, LIMITS["top_p"].high) == (0, 1)
    assert (LIMITS["classifier_free_guidance"].high, PROMPT_MAX_CHARS) == (20, 1000)
    assert LIMITS["seed"].high == SEED_MAX and CLIP_MAX_SECONDS == 600


# -- through the generation service: a refusal reaches no one --------------------------------


def _service(emulator: Emulator, data_dir: Path) -> GenerationService:
    return make_service(emulator, data_dir, MUSICGEN_ENGINE="replicate")


async def _as_the_api_does(service: GenerationService, raw: dict, token: str) -> list:
    """What `/generate` and the page do: parse and check, then run."""
    prepared = await asyncio.to_thread(service.prepare, raw)
    return [u async for u in service.generate(prepared, token=token, owner=None)]


def _out_of_range(name: str) -> st.SearchStrategy[Any]:
    limit = LIMITS[name]
    above = st.integers(min_value=int(limit.high) + 1, max_value=10**15)
    if not limit.whole:
        above = st.floats(min_value=limit.high, max_value=1e300, exclude_min=True)
    huge = st.sampled_from([10**12, 10**400, float("inf"), "1e400", "lots"])
    return st.one_of(above, huge)


refused_requests = st.sampled_from(NUMERIC).flatmap(
    lambda name: st.fixed_dictionaries(
        {"name": st.just(name), "value": _out_of_range(name)},
        optional={
            "prompt": st.sampled_from(["piano", "x" * (PROMPT_MAX_CHARS + 1)]),
            "normalization_strategy": st.sampled_from(["peak", "loud", "LOUDNESS"]),
            "duration": st.integers(min_value=1, max_value=4),
        },
    )
)


def test_a_refused_request_sends_nothing_at_all(emulator, tmp_path):
    service = _service(emulator, tmp_path / "data")

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=refused_requests)
    def refused_before_any_call(case: dict) -> None:
        raw = {k: v for k, v in case.items() if k not in ("name", "value")}
        raw.setdefault("prompt", "piano")
        raw[case["name"]] = case["value"]
        with pytest.raises(RequestInvalid) as caught:
            asyncio.run(_as_the_api_does(service, raw, emulator.token))
        assert case["name"] in {e.field for e in caught.value.errors}
        assert emulator.requests == [] and emulator.creates == 0
        assert Library(tmp_path / "data").list().total == 0

    refused_before_any_call()


def _tone(dest: Path, seconds: float, fmt: str = "flac") -> Path:
    """A quiet 8 kHz mono tone: long clips stay small and quick to make."""
    codec = {"flac": "flac", "wav": "pcm_s16le"}[fmt]
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi",
            "-i", f"sine=frequency=220:duration={seconds}:sample_rate=8000",
            "-ac", "1", "-c:a", codec, str(dest),
        ],
        check=True,
    )  # fmt: skip
    return dest


def _understated(wav: Path, claimed_seconds: float) -> Path:
    """The WAV with a header claiming only `claimed_seconds` of its sound (8 kHz, 16-bit)."""
    data = bytearray(wav.read_bytes())
    pos = 12
    while data[pos : pos + 4] != b"data":
        pos += 8 + struct.unpack_from("<I", data, pos + 4)[0]
    claimed = int(claimed_seconds * 8000) * 2
    struct.pack_into("<I", data, pos + 4, claimed)
    struct.pack_into("<I", data, 4, pos + claimed)
    wav.write_bytes(data)
    return wav


async def test_a_clip_over_ten_minutes_is_refused_on_input_audio_and_nothing_is_sent(
    emulator, tmp_path
):
    service = _service(emulator, tmp_path / "data")
    long_clip = _tone(tmp_path / "eleven-minutes.flac", CLIP_MAX_SECONDS + 60)
    # A WAV whose header says 2 s, holding 11 minutes: measured by its sound, not its header.
    lying = _understated(_tone(tmp_path / "lying.wav", CLIP_MAX_SECONDS + 60, "wav"), 2.0)
    for clip in (long_clip, lying):
        raw = {"prompt": "strings", "input_audio": str(clip), "duration": 5}
        with pytest.raises(RequestInvalid) as caught:
            await _as_the_api_does(service, raw, emulator.token)
        [error] = caught.value.errors
        assert error.field == "input_audio"
        assert "lasts more than 10 minutes, the limit for input audio" in error.message
    assert emulator.requests == []
    assert Library(tmp_path / "data").list().total == 0


async def test_a_clip_of_ten_minutes_is_accepted(emulator, tmp_path):
    service = _service(emulator, tmp_path / "data")
    clip = _tone(tmp_path / "ten-minutes.flac", CLIP_MAX_SECONDS)
    prepared = await asyncio.to_thread(
        service.prepare, {"prompt": "strings", "input_audio": str(clip), "duration": 2}
    )
    request = prepared.request
    assert request.input_audio == str(clip)


def test_a_typed_request_is_held_to_the_same_limits():
    with pytest.raises(ValidationError) as built:
        GenerationRequest(prompt="x", duration=10**12, temperature=50.0)
    assert {e["loc"][0] for e in built.value.errors()} == {"duration", "temperature"}
    with pytest.raises(RequestInvalid) as replaced:
        GenerationRequest(prompt="piano").replace(duration=10**12, temperature=50.0)
    errors = replaced.value.errors
    assert [e.field for e in errors] == ["duration", "temperature"]
    assert "from 1 to 300" in errors[0].message and "at most 5" in errors[1].message


async def test_a_request_built_in_code_is_held_to_the_engines_models_too(emulator, tmp_path):
    service = _service(emulator, tmp_path / "data")
    request = GenerationRequest(prompt="piano", duration=1, model_version="facebook/musicgen-small")
    with pytest.raises(RequestInvalid) as refused:
        [u async for u in service.generate(request, token=emulator.token, owner=None)]
    assert [e.field for e in refused.value.errors] == ["model_version"]
    assert "stereo-melody-large" in refused.value.errors[0].message
    assert emulator.creates == 0


# -- through `/generate` (gradio_client), as any API caller ----------------------------------
# These need `/generate` to take model_version, normalization_strategy and output_format as
# text (gr.Textbox) rather than gr.Dropdown: a dropdown refuses an unknown value itself, with
# Gradio's generic message, before our validation can name the field and its allowed values.


def refusal(app: AppProcess, emulator: Emulator, **inputs: object) -> str:
    """What `/generate` says when it refuses `inputs`; nothing reached the model."""
    before = len(creates(emulator))
    with pytest.raises(Exception) as refused:
        Client(app.url, verbose=False).predict(**inputs, api_name="/generate")
    assert len(creates(emulator)) == before
    return str(refused.value)


def test_api_names_a_bad_normalization_and_its_allowed_values(
    app: AppProcess,
    module_emulator: Emulator,
) -> None:
    message = refusal(
        app, module_emulator, prompt="Soft piano", duration=2, normalization_strategy="loud"
    )
    assert "Nothing was sent" in message
    assert "normalization_strategy: Normalization must be loudness, clip, peak or rms" in message
    assert '(you entered "loud")' in message


def test_api_refuses_every_value_past_its_limit_at_once(
    app: AppProcess,
    module_emulator: Emulator,
) -> None:
    message = refusal(
        app,
        module_emulator,
        prompt="x" * (PROMPT_MAX_CHARS + 1),
        duration=10**12,
        temperature=100,
        top_k=5000,
        top_p=2,
        classifier_free_guidance=50,
        output_format="ogg",
    )
    for field in (
        "prompt",
        "duration",
        "temperature",
        "top_k",
        "top_p",
        "classifier_free_guidance",
        "output_format",
    ):
        assert f"{field}: " in message, field
    assert "Duration must be a whole number of seconds from 1 to 300" in message
    assert "Temperature must be a number above 0 and at most 5" in message
    assert "Output format must be wav or mp3" in message
