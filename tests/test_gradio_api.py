"""The `/generate` endpoint through gradio_client, against `python app.py` and the emulator."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file

from services.audio import probe
from tests.browser_support import (
    MODEL_INPUTS,
    SERVER_TOKEN,
    VISITOR_TOKEN,
    AppProcess,
    creates,
    parameter_names,
)
from tests.emulator import Emulator
from tests.support.audio_files import make_tone
from tests.support.stored import files_holding


def client_for(app: AppProcess) -> Client:
    return Client(app.url, verbose=False)


def test_generate_is_named_with_the_model_inputs_and_runs_end_to_end(
    shared_app: AppProcess, module_emulator: Emulator, tmp_path: Path
) -> None:
    client = client_for(shared_app)
    api = client.view_api(return_format="dict", print_info=False)
    # The public endpoints and nothing internal.
    assert sorted(api["named_endpoints"]) == [
        "/arrange",
        "/extend",
        "/generate",
        "/loop",
        "/midi",
        "/stems",
        "/variations",
    ]
    assert not api["unnamed_endpoints"]
    # The model's inputs, then the engine; no api_token: the server has its own.
    assert parameter_names(client, "/generate") == [*MODEL_INPUTS, "engine"]

    before = len(creates(module_emulator))
    audio, record = client.predict(
        prompt="Bossa nova guitar and soft shaker",
        duration=3,
        model_version="stereo-large",
        output_format="mp3",
        seed=1234,
        temperature=0.9,
        top_k=100,
        classifier_free_guidance=4,
        api_name="/generate",
    )
    assert record["status"] == "succeeded", record
    assert record["seed"] == 1234
    assert record["error"] is None
    assert record["predict_time"] > 0
    assert record["library_id"]
    prediction = module_emulator.predictions[record["prediction_id"]]
    assert prediction.input["prompt"] == "Bossa nova guitar and soft shaker"
    sent = creates(module_emulator)[before:]
    assert len(sent) == 1
    assert sent[0]["input"] == {
        "prompt": "Bossa nova guitar and soft shaker",
        "model_version": "stereo-large",
        "duration": 3,
        "continuation": False,
        "continuation_start": 0,
        "multi_band_diffusion": False,
        "normalization_strategy": "loudness",
        "top_k": 100,
        "top_p": 0.0,
        "temperature": 0.9,
        "classifier_free_guidance": 4,
        "output_format": "mp3",
        "seed": 1234,
    }
    info = probe(audio)
    assert Path(audio).suffix == ".mp3"
    assert info.seconds == pytest.approx(3, abs=0.2) and info.channels == 2

    # A melody passed as a file reaches the model as decodable audio.
    melody = make_tone(tmp_path / "hum.wav", 5.0, channels=1)
    audio, record = client.predict(
        prompt="The tune on a string quartet",
        input_audio=handle_file(str(melody)),
        duration=4,
        api_name="/generate",
    )
    assert record["status"] == "succeeded", record
    run = module_emulator.predictions[record["prediction_id"]]
    assert run.input["continuation"] is False
    assert run.input_audio_info["duration"] == pytest.approx(5.0, abs=0.1)
    assert probe(audio).seconds == pytest.approx(4, abs=0.2)


def test_a_refused_request_names_the_field_and_sends_nothing(
    shared_app: AppProcess, module_emulator: Emulator
) -> None:
    client = client_for(shared_app)
    before = module_emulator.creates
    with pytest.raises(Exception, match="top_k") as refused:
        client.predict(prompt="too wide", top_k=5000, api_name="/generate")
    assert "Nothing was sent" in str(refused.value)
    assert module_emulator.creates == before


def test_the_server_token_never_leaves_the_server(shared_app: AppProcess) -> None:
    base = shared_app.url.rstrip("/")
    pages = [
        httpx.get(f"{base}/config").text,
        httpx.get(f"{base}/gradio_api/info").text,
        httpx.get(f"{base}/gradio_api/info?all_endpoints=true").text,
        httpx.get(base + "/").text,
    ]
    # The raw answer of one call, as any HTTP client sees it.
    values = ["raw call", None, 2, False, 0, None, "large", False, "rms", "wav"]
    values += [None, 1.0, 250, 0.0, 3, ""]
    event = httpx.post(
        f"{base}/gradio_api/call/generate", json={"data": values}, timeout=30
    ).json()["event_id"]
    pages.append(httpx.get(f"{base}/gradio_api/call/generate/{event}", timeout=60).text)
    assert "event: complete" in pages[-1]
    for text in pages:
        assert SERVER_TOKEN not in text
    assert SERVER_TOKEN not in shared_app.log_text()
    assert files_holding(shared_app.data_dir, SERVER_TOKEN) == []


def test_a_visitor_token_is_taken_as_api_token_and_never_echoed(
    local_app: AppProcess, module_emulator: Emulator
) -> None:
    client = client_for(local_app)
    assert parameter_names(client, "/generate") == [*MODEL_INPUTS, "engine", "api_token"]

    with pytest.raises(Exception, match="No Replicate API token"):
        client.predict(prompt="no token", duration=2, api_name="/generate")

    job = client.submit(
        prompt="Kalimba lullaby", duration=2, api_token=VISITOR_TOKEN, api_name="/generate"
    )
    audio, record = job.result()
    assert record["status"] == "succeeded", record
    assert module_emulator.predictions[record["prediction_id"]].token == VISITOR_TOKEN
    assert probe(audio).seconds == pytest.approx(2, abs=0.2)
    assert VISITOR_TOKEN not in repr(record)
    assert VISITOR_TOKEN not in httpx.get(local_app.url + "config").text
    assert VISITOR_TOKEN not in local_app.log_text()
    assert files_holding(local_app.data_dir, VISITOR_TOKEN) == []


def test_variations_and_extend_through_the_api(
    shared_app: AppProcess, module_emulator: Emulator
) -> None:
    client = client_for(shared_app)
    before = module_emulator.creates

    files, takes = client.predict(
        prompt="Dub techno chords", duration=3, n=3, api_name="/variations"
    )

    assert module_emulator.creates == before + 3
    assert len(files) == 3 and len(takes) == 3
    assert len({take["seed"] for take in takes}) == 3
    assert all(probe(f).seconds == pytest.approx(3, abs=0.2) for f in files)
    # On this shared deployment each call has its own identity: its access key lets the same
    # caller extend its take, and nobody else can.
    first = takes[0]
    assert first["access_key"]
    with pytest.raises(Exception, match="run_id"):
        client.predict(run_id=first["library_id"], seconds=5, api_name="/extend")
    track, piece = client.predict(
        run_id=first["library_id"],
        seconds=5,
        overlap=2,
        access_key=first["access_key"],
        api_name="/extend",
    )
    assert piece["status"] == "succeeded", piece
    assert probe(track).seconds == pytest.approx(8, abs=0.1)
    assert [part["part"] for part in piece["parts"]] == [0, 1]
    assert piece["parts"][1]["start"] == pytest.approx(3, abs=0.05)
    assert piece["parts"][1]["prediction_id"] in module_emulator.predictions


def test_a_song_in_sections_through_the_api(
    shared_app: AppProcess, module_emulator: Emulator
) -> None:
    client = client_for(shared_app)
    sections = [
        {"name": "intro", "prompt": "Music box intro", "seconds": 2},
        {"name": "verse", "prompt": "Music box with strings", "seconds": 3},
    ]
    before = len(creates(module_emulator))

    track, song = client.predict(sections=sections, overlap=1, seed=5, api_name="/arrange")

    assert song["status"] == "succeeded", song
    assert probe(track).seconds == pytest.approx(5, abs=0.1)
    assert [(s["name"], s["prompt"], s["start"], s["end"]) for s in song["sections"]] == [
        ("intro", "Music box intro", 0, 2),
        ("verse", "Music box with strings", 2, 5),
    ]
    assert [c["input"]["prompt"] for c in creates(module_emulator)[before:]] == [
        "Music box intro",
        "Music box with strings",
    ]
    # The caller makes its verse again (a string of JSON is taken too); the intro is kept.
    again = json.dumps([*sections[:1], {**sections[1], "prompt": "Music box with choir"}])
    _, redone = client.predict(
        sections=again,
        song_id=song["library_id"],
        from_section=2,
        access_key=song["access_key"],
        api_name="/arrange",
    )
    assert redone["status"] == "succeeded", redone
    assert redone["sections"][0]["run"] == song["sections"][0]["run"]
    assert redone["sections"][1]["run"] != song["sections"][1]["run"]
    assert creates(module_emulator)[-1]["input"]["prompt"] == "Music box with choir"
    # A refused song names its section and sends nothing.
    sent = len(creates(module_emulator))
    bad = json.dumps([{"prompt": "a", "seconds": 2}, {"prompt": "", "seconds": 2}])
    with pytest.raises(Exception, match="section 2"):
        client.predict(sections=bad, api_name="/arrange")
    assert len(creates(module_emulator)) == sent
