"""The Replicate emulator answers like the real API (checked against replicate-openapi.json)."""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from pydub import AudioSegment
from pydub.generators import Sine
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from tests.emulator import MUSICGEN_VERSION, Emulator, Fault

ROOT = Path(__file__).resolve().parents[1]
# Replicate's official OpenAPI description, kept with the tests so they never skip it.
SPEC_PATH = ROOT / "tests" / "data" / "replicate-openapi.json"
ID_RE = re.compile(r"^[a-z2-7]{26}$")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
PROGRESS_RE = re.compile(r"^ *(\d+) / +(\d+)$")


# --- OpenAPI validation ----------------------------------------------------------------------
def _nullable_to_type(node: Any) -> Any:
    """The spec marks nulls OpenAPI-3.0 style (`nullable: true`); say it in JSON Schema terms."""
    if isinstance(node, dict):
        node = {k: _nullable_to_type(v) for k, v in node.items()}
        if node.pop("nullable", False) and isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        return node
    if isinstance(node, list):
        return [_nullable_to_type(item) for item in node]
    return node


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return _nullable_to_type(json.loads(SPEC_PATH.read_text()))


def validate(spec: dict[str, Any], schema: dict[str, Any], instance: Any) -> None:
    """Validate against a schema whose $refs point into the OpenAPI document."""
    registry = Registry().with_resource("urn:openapi", DRAFT202012.create_resource(spec))
    validator = jsonschema.Draft202012Validator(
        schema,
        registry=registry,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    validator.validate(instance)


def schema_ref(name: str) -> dict[str, Any]:
    return {"$ref": f"urn:openapi#/components/schemas/{name}"}


def response_schema(spec: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    """The response body schema of one operation, its $refs made absolute."""
    content = spec["paths"][path][method]["responses"][status]["content"]
    schema = next(iter(content.values()))["schema"]
    text = json.dumps(schema).replace('"#/components', '"urn:openapi#/components')
    return json.loads(text)


def validate_prediction(spec: dict[str, Any], body: dict[str, Any]) -> None:
    """Check a prediction object, allowing the documented absence of `output` while starting."""
    if body["status"] == "starting" and "output" not in body:
        relaxed = copy.deepcopy(spec)
        schema = relaxed["components"]["schemas"]["schemas_prediction_response"]
        schema["required"] = [k for k in schema["required"] if k != "output"]
        spec = relaxed
    validate(spec, schema_ref("schemas_prediction_response"), body)
    assert ID_RE.match(body["id"])
    for key in ("created_at", "started_at", "completed_at"):
        if key in body:
            assert TIME_RE.match(body[key]), body[key]
    assert body["urls"]["web"] == f"https://replicate.com/p/{body['id']}"


# --- helpers ---------------------------------------------------------------------------------
@pytest.fixture
def api(emulator: Emulator) -> httpx.Client:
    with httpx.Client(base_url=emulator.base_url, headers=emulator.headers, timeout=10) as client:
        yield client


def create(
    api: httpx.Client, headers: dict[str, str] | None = None, **inputs: Any
) -> httpx.Response:
    body = {"version": MUSICGEN_VERSION, "input": inputs or {"prompt": "calm piano", "duration": 1}}
    return api.post("/v1/predictions", json=body, headers=headers or {})


def poll(api: httpx.Client, prediction_id: str, statuses: set[str], give_up: float = 20) -> dict:
    """GET until the status is one of `statuses`."""
    deadline = time.monotonic() + give_up
    while True:
        body = api.get(f"/v1/predictions/{prediction_id}").json()
        if body["status"] in statuses:
            return body
        assert time.monotonic() < deadline, f"stuck in {body['status']}"
        time.sleep(0.01)


TERMINAL = {"succeeded", "failed", "canceled", "aborted"}


def finished(api: httpx.Client, **inputs: Any) -> dict:
    response = create(api, **inputs)
    assert response.status_code == 201, response.text
    return poll(api, response.json()["id"], TERMINAL)


def wav_data_url(seconds: float = 3.0, channels: int = 1) -> str:
    tone = Sine(330).to_audio_segment(duration=int(seconds * 1000)).set_channels(channels)
    buffer = io.BytesIO()
    tone.export(buffer, format="wav")
    return "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode()


def decode(data: bytes) -> AudioSegment:
    return AudioSegment.from_file(io.BytesIO(data))


# --- auth and errors -------------------------------------------------------------------------
def test_missing_or_wrong_token_gets_the_exact_401(emulator: Emulator) -> None:
    expected = {
        "title": "Unauthenticated",
        "detail": "You did not pass a valid authentication token",
        "status": 401,
    }
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        response = httpx.get(emulator.url("/v1/predictions"), headers=headers)
        assert response.status_code == 401
        assert response.json() == expected
        assert response.headers["content-type"].startswith("application/problem+json")


def test_token_scheme_also_accepted(emulator: Emulator) -> None:
    response = httpx.get(
        emulator.url("/v1/predictions"), headers={"Authorization": f"Token {emulator.token}"}
    )
    assert response.status_code == 200
    assert emulator.requests[-1].auth_scheme == "Token"


def test_token_without_credit_gets_402_on_create(emulator: Emulator) -> None:
    emulator.configure(tokens=["rich", "broke"], no_credit_tokens=["broke"])
    response = httpx.post(
        emulator.url("/v1/predictions"),
        headers={"Authorization": "Bearer broke"},
        json={"version": MUSICGEN_VERSION, "input": {"prompt": "x"}},
    )
    assert response.status_code == 402
    assert response.json()["title"] == "Insufficient credit"
    assert emulator.creates == 0


def test_schema_violations_are_422_naming_each_field(api: httpx.Client, emulator: Emulator) -> None:
    response = create(
        api,
        prompt="x",
        duration=8.5,
        top_k="250",
        top_p=1,
        model_version="small",
        continuation_start=-1,
        continuation_end=-1,
        classifier_free_guidance=3.5,
        seed=None,
        input_audio="",
        colour="blue",
    )
    assert response.status_code == 422
    body = response.json()
    assert body["title"] == "Input validation failed"
    by_field = {item["field"]: item for item in body["invalid_fields"]}
    assert set(by_field) == {
        "input.duration",
        "input.top_k",
        "input.model_version",
        "input.continuation_start",
        "input.continuation_end",
        "input.classifier_free_guidance",
        "input.seed",
        "input.input_audio",
        "input.colour",
    }
    assert by_field["input.duration"]["type"] == "invalid_type"
    assert "Expected: integer, given: number" in by_field["input.duration"]["description"]
    assert by_field["input.seed"]["description"].endswith("given: null")
    assert by_field["input.model_version"]["type"] == "enum"
    assert by_field["input.continuation_end"]["type"] == "number_gte"
    assert by_field["input.colour"]["type"] == "additional_property_not_allowed"
    assert body["detail"].startswith("- input.")
    assert body["detail"].endswith("\n")
    assert body["detail"].count("\n") == len(body["invalid_fields"])
    assert emulator.creates == 0


def test_whole_floats_are_integers_and_ints_are_numbers(api: httpx.Client) -> None:
    response = create(api, prompt="x", duration=1.0, top_p=0, temperature=1)
    assert response.status_code == 201


def test_unknown_body_key_and_bad_version_are_422(api: httpx.Client) -> None:
    response = api.post(
        "/v1/predictions",
        json={"version": MUSICGEN_VERSION, "input": {"prompt": "x"}, "model": "meta/musicgen"},
    )
    assert response.status_code == 422
    assert "model" in response.json()["detail"]
    response = api.post("/v1/predictions", json={"version": "f" * 64, "input": {"prompt": "x"}})
    assert response.status_code == 422
    assert response.json()["title"] == "Invalid version or not permitted"
    owner_form = api.post(
        "/v1/predictions",
        json={"version": f"meta/musicgen:{MUSICGEN_VERSION}", "input": {"prompt": "x"}},
    )
    assert owner_form.status_code == 201


def test_unknown_and_foreign_predictions_are_404(api: httpx.Client, emulator: Emulator) -> None:
    assert api.get("/v1/predictions/doesnotexist").json() == {"detail": "Not found."}
    emulator.configure(tokens=[emulator.token, "other"])
    prediction_id = create(api).json()["id"]
    other = {"Authorization": "Bearer other"}
    assert (
        httpx.get(emulator.url(f"/v1/predictions/{prediction_id}"), headers=other).status_code
        == 404
    )
    cancel = httpx.post(emulator.url(f"/v1/predictions/{prediction_id}/cancel"), headers=other)
    assert cancel.status_code == 404
    listing = httpx.get(emulator.url("/v1/predictions"), headers=other).json()
    assert listing["results"] == []


# --- lifecycle, logs, outputs ----------------------------------------------------------------
def test_every_status_matches_the_openapi_schema(
    api: httpx.Client, emulator: Emulator, openapi: dict
) -> None:
    emulator.configure(queue_seconds=0.3, run_seconds=0.3)
    created = create(api, prompt="jazz", duration=1)
    assert created.status_code == 201
    body = created.json()
    assert body["status"] == "starting"
    for absent in ("output", "started_at", "metrics", "completed_at"):
        assert absent not in body
    assert body["logs"] == "" and body["error"] is None and body["data_removed"] is False
    assert body["model"] == "meta/musicgen" and body["source"] == "api"
    validate_prediction(openapi, body)
    processing = poll(api, body["id"], {"processing"})
    assert processing["output"] is None and "started_at" in processing
    validate_prediction(openapi, processing)
    done = poll(api, body["id"], TERMINAL)
    assert done["status"] == "succeeded"
    assert done["metrics"]["predict_time"] == pytest.approx(0.3)
    validate_prediction(openapi, done)

    emulator.configure(queue_seconds=0.05, run_seconds=None)
    failed = finished(api, duration=1)
    assert failed["status"] == "failed"
    validate_prediction(openapi, failed)
    emulator.configure(queue_seconds=5)
    canceled = api.post(f"/v1/predictions/{create(api).json()['id']}/cancel").json()
    assert canceled["status"] == "canceled"
    validate_prediction(openapi, canceled)


def test_logs_follow_the_model_format(api: httpx.Client) -> None:
    first = finished(api, prompt="a", duration=2, seed=1234, model_version="melody-large")
    lines = first["logs"].splitlines()
    assert lines[:3] == [
        "Loading model melody-large...",
        "Model melody-large loaded successfully.",
        "Using seed 1234",
    ]
    progress = [PROGRESS_RE.match(line) for line in lines[3:]]
    assert all(progress), lines
    done = [int(m.group(1)) for m in progress if m]
    assert {int(m.group(2)) for m in progress if m} == {100}  # 50 tokens a second
    assert done == sorted(done) and done[-1] == 100
    second = finished(api, prompt="b", duration=1, model_version="melody-large")
    seed_line = second["logs"].splitlines()[0]
    assert re.fullmatch(r"Using seed \d+", seed_line)  # warm worker: no loading lines


def test_progress_can_be_written_with_carriage_returns(
    api: httpx.Client, emulator: Emulator
) -> None:
    emulator.configure(progress_separator="\r", progress_every_tokens=10)
    logs = finished(api, prompt="a", duration=1)["logs"]
    assert "    10 /     50\r    20 /     50\r" in logs


def test_multiband_diffusion_loads_once(api: httpx.Client) -> None:
    logs = finished(api, prompt="a", duration=1, model_version="large", multi_band_diffusion=True)[
        "logs"
    ]
    assert logs.startswith("Loading MultiBandDiffusion...\nMultiBandDiffusion loaded successfully.")
    again = finished(api, prompt="a", duration=1, model_version="large", multi_band_diffusion=True)
    assert "MultiBandDiffusion" not in again["logs"]


def test_mp3_runs_log_the_ffmpeg_banner(api: httpx.Client) -> None:
    logs = finished(api, prompt="a", duration=1, output_format="mp3")["logs"]
    assert "ffmpeg version" in logs and "Output #0, mp3, to 'out.mp3'" in logs


@pytest.mark.parametrize(
    ("model_version", "output_format", "channels"),
    [("stereo-melody-large", "wav", 2), ("large", "mp3", 1)],
)
def test_output_is_synthetic_audio_of_the_requested_shape(
    api: httpx.Client, model_version: str, output_format: str, channels: int
) -> None:
    done = finished(
        api, prompt="drums", duration=2, model_version=model_version, output_format=output_format
    )
    assert done["status"] == "succeeded"
    assert done["output"].endswith(f"/out.{output_format}")
    download = httpx.get(done["output"])  # delivery URLs need no token
    assert download.status_code == 200
    assert "emulator" in download.headers["x-replicate-emulator"]
    audio = decode(download.content)
    assert audio.channels == channels
    assert audio.frame_rate == 32000
    assert audio.duration_seconds == pytest.approx(2.0, abs=0.08)
    assert audio.rms > 0


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"duration": 1}, "Must provide either prompt or input_audio"),
        (
            {"prompt": "x", "continuation": True},
            "Must provide `input_audio` if continuation is `True`.",
        ),
        (
            {"prompt": "x", "model_version": "stereo-large", "input_audio": "AUDIO"},
            "`stereo-large` and `large` model does not support melody input.",
        ),
        (
            {"prompt": "x", "model_version": "stereo-large", "multi_band_diffusion": True},
            "Multi-Band Diffusion is only available with non-stereo models.",
        ),
        (
            {
                "input_audio": "AUDIO",
                "continuation": True,
                "continuation_start": 2,
                "continuation_end": 1,
            },
            "`continuation_start` must be less than or equal to `continuation_end`",
        ),
        (
            {"input_audio": "AUDIO", "continuation": True, "duration": 2},
            "Prompt is longer than audio to generate",
        ),
    ],
)
def test_model_refusals_are_failed_runs(
    api: httpx.Client, inputs: dict[str, Any], message: str
) -> None:
    if inputs.get("input_audio") == "AUDIO":
        inputs = {**inputs, "input_audio": wav_data_url(3.0)}
    response = create(api, **inputs)
    assert response.status_code == 201
    done = poll(api, response.json()["id"], TERMINAL)
    assert done["status"] == "failed"
    assert done["error"].startswith(message)
    assert "Traceback (most recent call last):" in done["logs"]
    assert done["logs"].rstrip().endswith(done["error"])
    assert done["output"] is None


def test_continuation_output_is_prompt_slice_plus_new_audio(
    api: httpx.Client, emulator: Emulator
) -> None:
    done = finished(
        api,
        prompt="more",
        input_audio=wav_data_url(3.0, channels=1),
        continuation=True,
        continuation_start=1,
        duration=4,
    )
    assert done["status"] == "succeeded"
    lines = done["logs"].splitlines()
    assert lines[-1].endswith("/    100")  # 4 s total minus the 2 s prompt slice
    audio = decode(httpx.get(done["output"]).content)
    assert audio.duration_seconds == pytest.approx(4.0, abs=0.08)
    assert audio.channels == 2
    info = emulator.prediction(done["id"]).input_audio_info
    assert info is not None and info["channels"] == 1
    assert info["duration"] == pytest.approx(3.0, abs=0.05)


def test_undecodable_input_audio_fails_the_run_clearly(
    api: httpx.Client, emulator: Emulator
) -> None:
    junk = "data:audio/wav;base64," + base64.b64encode(b"not audio at all" * 20).decode()
    done = finished(api, prompt="x", input_audio=junk)
    assert done["status"] == "failed"
    assert "input_audio" in done["error"]
    assert emulator.prediction(done["id"]).input_audio_error


def test_uploaded_file_is_fetched_as_melody(api: httpx.Client, emulator: Emulator) -> None:
    buffer = io.BytesIO()
    Sine(440).to_audio_segment(duration=1500).export(buffer, format="ogg")
    upload = api.post(
        "/v1/files",
        files={"content": ("melody.ogg", buffer.getvalue(), "audio/ogg")},
        data={"metadata": json.dumps({"purpose": "melody"})},
    )
    assert upload.status_code == 201
    done = finished(api, prompt="x", input_audio=upload.json()["urls"]["get"], duration=1)
    assert done["status"] == "succeeded"
    info = emulator.prediction(done["id"]).input_audio_info
    assert info is not None and info["format"] == "ogg"
    assert info["duration"] == pytest.approx(1.5, abs=0.05)


# --- cancel, wait, deadlines -----------------------------------------------------------------
def test_cancel_while_starting_and_while_processing(api: httpx.Client, emulator: Emulator) -> None:
    emulator.configure(queue_seconds=10)
    starting = create(api).json()
    canceled = api.post(f"/v1/predictions/{starting['id']}/cancel")
    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled"
    assert "started_at" not in canceled.json()

    emulator.configure(queue_seconds=0.05, run_seconds=10)
    running = poll(api, create(api).json()["id"], {"processing"})
    canceled = api.post(f"/v1/predictions/{running['id']}/cancel").json()
    assert canceled["status"] == "canceled" and "started_at" in canceled
    assert canceled["output"] is None
    assert api.get(f"/v1/predictions/{running['id']}").json()["status"] == "canceled"


def test_cancel_on_a_finished_run_changes_nothing(api: httpx.Client) -> None:
    done = finished(api)
    again = api.post(f"/v1/predictions/{done['id']}/cancel").json()
    assert again["status"] == "succeeded" and again["output"] == done["output"]


def test_prefer_wait_blocks_until_the_end(api: httpx.Client) -> None:
    response = create(api, headers={"Prefer": "wait"})
    assert response.status_code == 201
    assert response.headers["preference-applied"] == "wait=60"
    assert response.json()["status"] == "succeeded"
    response = create(api, headers={"Prefer": "wait=5"})
    assert response.headers["preference-applied"] == "wait=5"
    assert response.json()["status"] == "succeeded"


def test_prefer_wait_returns_an_unfinished_run_when_time_is_up(
    api: httpx.Client, emulator: Emulator
) -> None:
    emulator.configure(run_seconds=30, max_wait_seconds=0.2)
    response = create(api, headers={"Prefer": "wait=1"})
    assert response.json()["status"] in {"starting", "processing"}


def test_cancel_during_a_blocking_create(api: httpx.Client, emulator: Emulator) -> None:
    import threading

    emulator.configure(run_seconds=30)
    answer: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: answer.update(create(api, headers={"Prefer": "wait=60"}).json())
    )
    thread.start()
    give_up = time.monotonic() + 10
    while not emulator.predictions and time.monotonic() < give_up:
        time.sleep(0.01)
    (prediction_id,) = emulator.predictions
    api.post(f"/v1/predictions/{prediction_id}/cancel")
    thread.join(10)
    assert answer["status"] == "canceled"


def test_cancel_after_deadline(api: httpx.Client, emulator: Emulator) -> None:
    emulator.configure(min_cancel_after_seconds=0.1, queue_seconds=5)
    aborted = create(api, headers={"Cancel-After": "0.2s"}).json()
    assert "deadline" in aborted
    assert poll(api, aborted["id"], TERMINAL)["status"] == "aborted"
    emulator.configure(queue_seconds=0.05, run_seconds=5)
    running = create(api, headers={"Cancel-After": "0.3"}).json()
    assert poll(api, running["id"], TERMINAL)["status"] == "canceled"
    emulator.configure(min_cancel_after_seconds=5)
    assert create(api, headers={"Cancel-After": "2s"}).status_code == 400


# --- retention -------------------------------------------------------------------------------
def test_outputs_expire(api: httpx.Client, emulator: Emulator, openapi: dict) -> None:
    emulator.configure(output_ttl_seconds=0.3)
    done = finished(api, prompt="x", duration=1)
    assert httpx.get(done["output"]).status_code == 200
    time.sleep(0.35)
    assert httpx.get(done["output"]).status_code == 404
    later = api.get(f"/v1/predictions/{done['id']}").json()
    assert later["data_removed"] is True
    assert "output" in later and later["output"] is None
    validate_prediction(openapi, later)


def test_expire_outputs_now(api: httpx.Client, emulator: Emulator) -> None:
    done = finished(api)
    emulator.expire_outputs()
    assert httpx.get(done["output"]).status_code == 404
    assert api.get(f"/v1/predictions/{done['id']}").json()["data_removed"] is True


# --- listing ---------------------------------------------------------------------------------
def test_listing_pages_newest_first(api: httpx.Client, emulator: Emulator, openapi: dict) -> None:
    emulator.configure(page_size=2)
    made = [create(api, prompt=f"p{i}", duration=1).json()["id"] for i in range(5)]
    for prediction_id in made:  # finished runs carry every required field
        poll(api, prediction_id, TERMINAL)
    seeded = emulator.add_existing_prediction(created_at=time.time() - 7200, data_removed=True)
    emulator.configure(tokens=[emulator.token, "other"])
    emulator.add_existing_prediction(token="other")
    seen: list[str] = []
    url: str | None = "/v1/predictions"
    pages = 0
    while url:
        page = api.get(url).json()
        validate(openapi, response_schema(openapi, "/predictions", "get", "200"), page)
        assert len(page["results"]) <= 2
        seen += [p["id"] for p in page["results"]]
        if page["next"]:
            assert page["next"].startswith(emulator.base_url + "/v1/predictions?cursor=")
        url = page["next"]
        pages += 1
    assert seen == [*reversed(made), seeded]
    assert pages == 3
    second = api.get(api.get("/v1/predictions").json()["next"]).json()
    assert second["previous"] is not None
    back = api.get(second["previous"]).json()
    assert [p["id"] for p in back["results"]] == list(reversed(made))[:2]


def test_seeded_predictions(api: httpx.Client, emulator: Emulator) -> None:
    emulator.configure(run_seconds=30)
    ok = emulator.add_existing_prediction(input={"prompt": "old", "duration": 1})
    removed = emulator.add_existing_prediction(data_removed=True)
    failed = emulator.add_existing_prediction(status="failed", error="boom")
    running = emulator.add_existing_prediction(status="processing")
    body = api.get(f"/v1/predictions/{ok}").json()
    assert body["status"] == "succeeded"
    assert decode(httpx.get(body["output"]).content).duration_seconds == pytest.approx(1, abs=0.05)
    assert api.get(f"/v1/predictions/{removed}").json()["data_removed"] is True
    assert api.get(f"/v1/predictions/{failed}").json()["error"] == "boom"
    assert api.get(f"/v1/predictions/{running}").json()["status"] == "processing"
    assert emulator.creates == 0


# --- files -----------------------------------------------------------------------------------
def test_files_api(api: httpx.Client, emulator: Emulator, openapi: dict) -> None:
    upload = api.post(
        "/v1/files",
        files={"content": ("clip.wav", b"RIFF1234", "audio/wav")},
        data={"metadata": json.dumps({"k": 1})},
    )
    assert upload.status_code == 201
    body = upload.json()
    validate(openapi, response_schema(openapi, "/files", "post", "201"), body)
    assert body["name"] == "clip.wav" and body["content_type"] == "audio/wav"
    assert body["size"] == 8 and body["metadata"] == {"k": 1}
    assert body["urls"]["get"] == emulator.url(f"/v1/files/{body['id']}")
    fetched = api.get(body["urls"]["get"])
    assert fetched.json() == body
    assert api.get(f"/v1/files/{body['id']}/download").content == b"RIFF1234"
    assert api.get("/v1/files/nope").status_code == 404


def test_files_above_the_limit_are_413(api: httpx.Client, emulator: Emulator) -> None:
    emulator.configure(max_file_bytes=1000)
    response = api.post("/v1/files", files={"content": ("big.wav", b"x" * 2000, "audio/wav")})
    assert response.status_code == 413
    assert "100MB" in response.json()["detail"]


# --- streaming -------------------------------------------------------------------------------
def read_events(api: httpx.Client, url: str, last_id: str | None = None) -> list[dict[str, str]]:
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
    if last_id:
        headers["Last-Event-ID"] = last_id
    events: list[dict[str, str]] = []
    with api.stream("GET", url, headers=headers) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        for line in response.iter_lines():
            if not line:
                if current:
                    events.append({**current, "data": "\n".join(current.get("data", []))})
                current = {}
                continue
            key, _, value = line.partition(": ")
            if key == "data":
                current.setdefault("data", []).append(value)
            else:
                current[key] = value
    return events


def test_stream_sends_logs_output_done(api: httpx.Client) -> None:
    created = create(api, prompt="x", duration=1, seed=7).json()
    events = read_events(api, created["urls"]["stream"])
    kinds = [e["event"] for e in events]
    assert kinds[-2:] == ["output", "done"]
    assert set(kinds[:-2]) == {"logs"}
    logs = "\n".join(e["data"] for e in events if e["event"] == "logs")
    assert "Using seed 7" in logs and "    50 /     50" in logs
    final = api.get(f"/v1/predictions/{created['id']}").json()
    assert events[-2]["data"] == final["output"]
    assert json.loads(events[-1]["data"]) == {}
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids)
    # Reconnecting after the first logs event repeats nothing before it.
    resumed = read_events(api, created["urls"]["stream"], last_id=events[0]["id"])
    assert resumed[0]["id"] != events[0]["id"]
    assert [e["event"] for e in resumed][-2:] == ["output", "done"]


def test_stream_of_failed_and_canceled_runs(api: httpx.Client, emulator: Emulator) -> None:
    failed = create(api, duration=1).json()
    events = read_events(api, failed["urls"]["stream"])
    assert [e["event"] for e in events][-2:] == ["error", "done"]
    assert "Must provide either prompt" in json.loads(events[-2]["data"])["detail"]
    assert json.loads(events[-1]["data"]) == {"reason": "error"}
    emulator.configure(queue_seconds=10)
    waiting = create(api).json()
    api.post(f"/v1/predictions/{waiting['id']}/cancel")
    events = read_events(api, waiting["urls"]["stream"])
    assert [e["event"] for e in events] == ["done"]
    assert json.loads(events[0]["data"]) == {"reason": "canceled"}


def test_stream_can_be_switched_off(api: httpx.Client, emulator: Emulator) -> None:
    emulator.configure(stream=False)
    created = create(api).json()
    assert "stream" not in created["urls"]


# --- faults ----------------------------------------------------------------------------------
def test_status_faults_fire_the_given_number_of_times(
    api: httpx.Client, emulator: Emulator
) -> None:
    emulator.add_fault("status", status=503, path="/v1/predictions", method="GET", times=2)
    assert [api.get("/v1/predictions").status_code for _ in range(3)] == [503, 503, 200]
    emulator.add_fault("status", status=429, retry_after="3")
    throttled = api.get("/v1/predictions")
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "3"
    assert "throttled" in throttled.json()["detail"]
    emulator.add_fault("status", status=429)
    assert "retry-after" not in api.get("/v1/predictions").headers
    emulator.add_fault("status", status=502)
    assert api.get("/v1/predictions").headers["content-type"].startswith("text/html")
    emulator.inject(Fault(kind="status", status=500, body={"detail": "kaput"}))
    assert api.get("/v1/predictions").json() == {"detail": "kaput"}


def test_dropped_connections(api: httpx.Client, emulator: Emulator) -> None:
    emulator.add_fault("drop", method="POST", path="/v1/predictions")
    with pytest.raises(httpx.TransportError):
        create(api)
    assert emulator.creates == 0
    emulator.add_fault("drop_after", method="POST", path="/v1/predictions")
    with pytest.raises(httpx.TransportError):
        create(api)
    assert emulator.creates == 1
    assert create(api).status_code == 201
    assert emulator.creates == 2
    assert [r.fault for r in emulator.requests] == ["drop", "drop_after", None]


def test_slow_and_malformed_answers(api: httpx.Client, emulator: Emulator) -> None:
    emulator.add_fault("slow", delay=1.0, path="/v1/predictions")
    with pytest.raises(httpx.ReadTimeout):
        api.get("/v1/predictions", timeout=0.2)
    emulator.add_fault("malformed", path="/v1/predictions")
    response = api.get("/v1/predictions")
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


# --- recording, limits, controls -------------------------------------------------------------
def test_requests_are_recorded_without_the_token_in_headers(
    api: httpx.Client, emulator: Emulator
) -> None:
    create(api, prompt="hello", duration=1)
    record = emulator.requests[-1]
    assert record.method == "POST" and record.path == "/v1/predictions"
    assert record.json == {"version": MUSICGEN_VERSION, "input": {"prompt": "hello", "duration": 1}}
    assert record.headers["authorization"] == "REDACTED"
    assert record.token == emulator.token and record.auth_scheme == "Bearer"
    assert record.status == 201
    assert emulator.count("POST", "/v1/predictions") == 1
    assert emulator.count("GET") == 0


def test_rate_limit_headers_and_throttling(api: httpx.Client, emulator: Emulator) -> None:
    emulator.configure(read_limit_per_minute=2)
    first = api.get("/v1/predictions")
    assert first.headers["ratelimit-remaining"] == "1"
    assert int(first.headers["ratelimit-reset"]) > 0
    api.get("/v1/predictions")
    assert api.get("/v1/predictions").status_code == 429


def test_http_controls_drive_an_emulator_elsewhere(emulator: Emulator) -> None:
    control = httpx.Client(base_url=emulator.base_url + "/_emulator")
    assert control.post("/config", json={"run_seconds": 0.1}).json()["run_seconds"] == 0.1
    assert control.post("/config", json={"nonsense": 1}).status_code == 400
    control.post("/faults", json={"kind": "status", "status": 500, "path": "/v1/account"})
    assert httpx.get(emulator.url("/v1/account"), headers=emulator.headers).status_code == 500
    recorded = control.get("/requests").json()
    assert recorded["requests"][-1]["fault"] == "status"
    assert control.post("/reset").status_code == 200
    assert control.get("/requests").json()["requests"] == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_runs_by_hand_and_says_it_is_an_emulator() -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator", "--port", str(port), "--queue-seconds", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline() + process.stdout.readline()
        assert f"http://127.0.0.1:{port}" in banner
        assert "synthesised tones" in banner
        response = httpx.get(
            f"http://127.0.0.1:{port}/v1/predictions",
            headers={"Authorization": "Bearer test-token"},
        )
        assert response.status_code == 200
    finally:
        process.terminate()
        process.wait(10)
