"""The Replicate client against the project's emulator, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
from datetime import UTC, datetime, timedelta

import pytest

from services.errors import (
    ApiError,
    AudioError,
    ConnectionFailed,
    InsufficientCredit,
    InvalidInput,
    NotFound,
    OutputExpired,
    RateLimited,
    ServerError,
    Unauthenticated,
)
from services.events import seed_reading
from services.musicgen import GenerationRequest
from services.replicate import ReplicateClient, Timeouts
from services.replicate.http import USER_AGENT
from services.replicate.retry import RetryPolicy, parse_retry_after
from tests.client_support import collect, make_client, write_wav
from tests.emulator import MUSICGEN_VERSION, EmulatorConfig, run_emulator

SECRET = "r8_" + "SeCrEt0123456789abcdefghijklmnopqrstuv"  # fake; split so secret scanners skip it
BROKE = "r8_" + "NoCredit0123456789abcdefghijklmnopqrs"  # fake; split so secret scanners skip it
SIMPLE = {"prompt": "client test: calm strings", "duration": 2, "seed": 7}


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig.fast(tokens=[SECRET, BROKE], no_credit_tokens=[BROKE])


def creates_sent(emulator) -> list:
    return [r for r in emulator.requests if r.method == "POST" and r.path == "/v1/predictions"]


# ---- requests ---------------------------------------------------------------------------------


async def test_a_run_with_every_input_set_reaches_the_api_as_exact_json(emulator, tmp_path):
    clip = write_wav(tmp_path / "clip.wav", 2.0, rate=8000)
    async with make_client(emulator) as client:
        audio_uri = await client.files.upload(clip)
        request = GenerationRequest(
            prompt="warm analog bassline",
            input_audio=str(clip),
            duration=4,
            continuation=True,
            continuation_start=0,
            continuation_end=1,
            model_version="melody-large",
            multi_band_diffusion=True,
            normalization_strategy="peak",
            top_k=100,
            top_p=0.5,
            temperature=0.7,
            classifier_free_guidance=5,
            output_format="mp3",
            seed=1234,
        )
        prediction = await client.predictions.create(request.to_api_input(audio_uri), wait=3)
        final = (await collect(client.follow(prediction, seed=seed_reading)))[-1]

    expected = {
        "version": MUSICGEN_VERSION,
        "input": {
            "prompt": "warm analog bassline",
            "input_audio": audio_uri,
            "duration": 4,
            "continuation": True,
            "continuation_start": 0,
            "continuation_end": 1,
            "model_version": "melody-large",
            "multi_band_diffusion": True,
            "normalization_strategy": "peak",
            "top_k": 100,
            "top_p": 0.5,
            "temperature": 0.7,
            "classifier_free_guidance": 5,
            "output_format": "mp3",
            "seed": 1234,
        },
    }
    [sent] = creates_sent(emulator)
    # Compared as JSON text: 4 and 4.0, true and 1 must not pass for each other.
    assert json.dumps(sent.json, sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert audio_uri.startswith("data:audio/x-wav;base64,")
    assert (sent.auth_scheme, sent.token) == ("Bearer", SECRET)
    assert sent.headers["user-agent"] == USER_AGENT
    assert sent.headers["prefer"] == "wait=3"
    assert final.status == "succeeded", final.error
    assert final.seed == 1234


async def test_every_request_carries_the_token_and_the_apps_user_agent(emulator):
    async with make_client(emulator) as client:
        prediction = await client.predictions.create(SIMPLE, wait=0)
        await client.predictions.get(prediction["id"])
        await client.predictions.cancel(prediction["id"])
        _ = [p async for p in client.predictions.list()]
    assert len(emulator.requests) == 4
    for recorded in emulator.requests:
        assert (recorded.auth_scheme, recorded.token) == ("Bearer", SECRET)
        assert recorded.headers["user-agent"].startswith("musicgen-studio/")


# ---- error answers ----------------------------------------------------------------------------


async def test_each_error_status_gives_its_typed_error_with_the_apis_words(emulator):
    async with make_client(emulator, token="r8_wrong_token_0000000000000000000000000") as stranger:
        with pytest.raises(Unauthenticated) as unauth:
            await stranger.predictions.create(SIMPLE)
    assert str(unauth.value) == "You did not pass a valid authentication token"
    assert unauth.value.status == 401

    async with make_client(emulator, token=BROKE) as broke:
        with pytest.raises(InsufficientCredit) as credit:
            await broke.predictions.create(SIMPLE)
    assert "You have insufficient credit to run this model" in str(credit.value)

    async with make_client(emulator) as client:
        with pytest.raises(NotFound) as missing:
            await client.predictions.get("doesnotexist0000000000000000")
        assert str(missing.value) == "Not found."

        with pytest.raises(InvalidInput) as invalid:
            await client.predictions.create(
                {"prompt": "x", "model_version": "tiny", "top_k": "many"}
            )
        fields = {f["field"] for f in invalid.value.invalid_fields}
        assert {"input.model_version", "input.top_k"} <= fields
        assert "input.model_version" in str(invalid.value)
        assert invalid.value.title == "Input validation failed"

        emulator.add_fault("status", status=429, method="GET", path="/v1/predictions", times=None)
        with pytest.raises(RateLimited) as limited:
            await client.predictions.get("abc")
        assert "Request was throttled" in str(limited.value)
        emulator.clear_faults()

        for status, words in [
            (500, "Internal server error"),
            (503, "Service Unavailable"),
            (502, "The Replicate API answered 502"),
        ]:
            emulator.add_fault("status", status=status, method="GET", times=None)
            with pytest.raises(ServerError) as server:
                await client.predictions.get("abc")
            assert words in str(server.value)
            assert "<html>" not in str(server.value)
            assert server.value.status == status
            emulator.clear_faults()

    async with make_client(emulator, version="0" * 64) as wrong_version:
        with pytest.raises(InvalidInput) as version:
            await wrong_version.predictions.create(SIMPLE)
    assert "The specified version does not exist" in str(version.value)
    assert emulator.creates == 0


async def test_the_token_never_shows_in_errors_reprs_or_logs(emulator, caplog):
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    async with make_client(emulator) as client:
        assert SECRET not in repr(client) and SECRET not in str(client)
        for fault in [
            {"kind": "status", "status": 429, "method": "GET", "times": None},
            {"kind": "status", "status": 503, "method": "GET", "times": None},
            {"kind": "malformed", "method": "GET", "times": None},
            {"kind": "drop", "method": "GET", "times": None},
            {"kind": "drop", "method": "POST", "path": "/v1/predictions", "times": 1},
            {"kind": "status", "status": 500, "method": "POST", "times": 1},
        ]:
            emulator.add_fault(**fault)
            try:
                if fault["method"] == "GET":
                    await client.predictions.get("abc")
                else:
                    await client.predictions.create(SIMPLE)
            except Exception as exc:
                errors.append(exc)
            emulator.clear_faults()
        try:
            await client.predictions.create({"prompt": "x", "duration": "long"})
        except Exception as exc:
            errors.append(exc)
    async with make_client(emulator, token=SECRET[::-1]) as stranger:
        try:
            await stranger.predictions.get("abc")
        except Exception as exc:
            errors.append(exc)
    async with make_client(emulator, base_url="http://127.0.0.1:9") as nowhere:
        try:
            await nowhere.predictions.get("abc")
        except Exception as exc:
            errors.append(exc)

    # The two unclear creates recover: the listing shows nothing was made, so they are sent again.
    assert len(errors) == 7
    for error in errors:
        chain = error
        while chain is not None:  # the causes too: tracebacks print them
            for text in (str(chain), repr(chain)):
                assert SECRET not in text and SECRET[::-1] not in text
            chain = chain.__cause__ or chain.__context__
    assert caplog.records, "the retries should have been logged"
    for record in caplog.records:
        text = record.getMessage() + repr(record.args)
        assert SECRET not in text and SECRET[::-1] not in text


# ---- retries ----------------------------------------------------------------------------------


async def test_reads_recover_from_5xx_429_dropped_connections_and_malformed_json(emulator):
    # One policy counts every kind of failure alike: five faults in a row need six tries.
    patient = RetryPolicy(attempts=6, base_delay=0.02, max_delay=0.1)
    async with make_client(emulator, retry=patient) as client:
        prediction = await client.predictions.create(SIMPLE, wait=0)
        path = f"/v1/predictions/{prediction['id']}"
        for kind, options in [
            ("status", {"status": 500}),
            ("drop", {}),
            ("status", {"status": 429}),
            ("malformed", {}),
            ("status", {"status": 503, "retry_after": "0"}),
        ]:
            emulator.add_fault(kind, method="GET", path=path, times=1, **options)
        fetched = await client.predictions.get(prediction["id"])
    assert fetched["id"] == prediction["id"]
    assert emulator.count("GET", path) == 6  # five faults, then the answer
    assert emulator.creates == 1


async def test_retry_after_is_honoured_and_a_long_one_is_reported(emulator, caplog):
    caplog.set_level(logging.WARNING, logger="services.replicate")
    async with make_client(emulator) as client:
        emulator.add_fault("status", status=429, method="GET", retry_after="1", times=1)
        with pytest.raises(NotFound):
            await client.predictions.get("abc")
        assert any("retrying in 1.00 s" in r.getMessage() for r in caplog.records)

        emulator.add_fault("status", status=429, method="GET", retry_after="3600", times=1)
        with pytest.raises(RateLimited) as limited:
            await client.predictions.get("abc")
    assert limited.value.retry_after == 3600
    assert emulator.count("GET", "/v1/predictions/abc") == 3


def test_retry_after_reads_seconds_and_http_dates():
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now=now) == 7
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now=now) == 30
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now=now) == 0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None


async def test_reads_give_up_after_a_bounded_number_of_tries(emulator):
    emulator.add_fault("status", status=503, method="GET", times=None)
    async with make_client(emulator, retry=RetryPolicy(attempts=3, base_delay=0.01)) as client:
        with pytest.raises(ServerError):
            await client.predictions.get("abc")
    assert emulator.count("GET") == 3


@pytest.mark.parametrize(
    ("fault", "posts"),
    [
        ({"kind": "status", "status": 429}, 2),  # refused: sent again
        ({"kind": "status", "status": 429, "retry_after": "1"}, 2),
        ({"kind": "drop_after"}, 1),  # made, answer lost: found in the listing, adopted
        ({"kind": "late", "delay": 1.0}, 1),  # made, answered after the timeout: adopted
        ({"kind": "slow", "delay": 0.2}, 1),  # within the timeout: simply slow
        ({"kind": "drop"}, 2),  # never made: the listing says so three times, sent again
        ({"kind": "status", "status": 503}, 2),
        ({"kind": "status", "status": 502}, 2),
        ({"kind": "status", "status": 500}, 2),
        ({"kind": "malformed"}, 2),
    ],
)
async def test_injected_faults_on_create_never_start_a_second_run(emulator, fault, posts):
    # An identical run made a minute ago must not be mistaken for this one.
    older = emulator.add_existing_prediction(
        input=SIMPLE, created_at=(datetime.now(UTC) - timedelta(seconds=60)).timestamp()
    )
    emulator.add_fault(method="POST", path="/v1/predictions", times=1, **fault)
    async with make_client(emulator, timeouts=Timeouts(wait_margin=0.5)) as client:
        prediction = await client.predictions.create(SIMPLE)
        assert emulator.creates == 1
        made = [pid for pid in emulator.predictions if pid != older]
        assert [prediction["id"]] == made
        final = (await collect(client.follow(prediction)))[-1]
        assert final.status == "succeeded"
    assert len(creates_sent(emulator)) == posts


async def test_a_create_that_keeps_failing_unclearly_says_nothing_was_made(emulator):
    emulator.add_fault("status", status=503, method="POST", path="/v1/predictions", times=None)
    async with make_client(emulator) as client:
        with pytest.raises(ServerError) as failure:
            await client.predictions.create(SIMPLE)
    assert "no run was started" in str(failure.value)
    assert emulator.creates == 0
    assert len(creates_sent(emulator)) == 3  # the first try and two checked retries
    # Each retry waited for three listings that showed nothing.
    assert emulator.count("GET", "/v1/predictions") >= 9


async def test_a_create_whose_lookup_fails_too_is_reported_as_unknown(emulator):
    emulator.add_fault("status", status=503, method="POST", path="/v1/predictions", times=1)
    emulator.add_fault("status", status=503, method="GET", path="/v1/predictions", times=None)
    async with make_client(emulator) as client:
        with pytest.raises(ConnectionFailed) as failure:
            await client.predictions.create(SIMPLE)
    assert "not known whether the run started" in str(failure.value)
    assert len(creates_sent(emulator)) == 1


async def test_a_create_that_never_left_is_retried_once_the_api_is_reachable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ReplicateClient(
        SECRET,
        base_url=f"http://127.0.0.1:{port}",
        version=MUSICGEN_VERSION,
        retry=RetryPolicy(attempts=8, base_delay=0.2, max_delay=0.5),
    )
    async with client:
        task = asyncio.create_task(client.predictions.create(SIMPLE, wait=0))
        await asyncio.sleep(0.4)  # the first tries meet a closed port
        assert not task.done()
        config = EmulatorConfig.fast(tokens=[SECRET])
        with run_emulator(config, port=port) as emulator:
            prediction = await task
            assert emulator.creates == 1
            assert [prediction["id"]] == list(emulator.predictions)


# ---- cancel -----------------------------------------------------------------------------------


async def test_cancel_during_a_blocking_create_cancels_the_run_it_made(emulator):
    emulator.configure(run_seconds=20)
    async with make_client(emulator) as client:
        task = asyncio.create_task(client.predictions.create(SIMPLE, wait=30))
        for _ in range(500):
            if emulator.creates and emulator.status(next(iter(emulator.predictions))) == (
                "processing"
            ):
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    [pid] = emulator.predictions
    assert emulator.status(pid) == "canceled"
    assert emulator.creates == 1
    assert len(creates_sent(emulator)) == 1
    assert emulator.count("POST", f"/v1/predictions/{pid}/cancel") >= 1


async def test_cancel_is_retried_because_it_is_idempotent(emulator):
    emulator.configure(run_seconds=5)
    async with make_client(emulator) as client:
        prediction = await client.predictions.create(SIMPLE, wait=0)
        emulator.add_fault("status", status=503, method="POST", path="/v1/predictions/", times=1)
        canceled = await client.predictions.cancel(prediction["id"])
    assert canceled["status"] == "canceled"
    assert emulator.count("POST", f"/v1/predictions/{prediction['id']}/cancel") == 2


# ---- listing ----------------------------------------------------------------------------------


async def test_list_predictions_follows_every_page(emulator):
    emulator.configure(page_size=3)
    made = [
        emulator.add_existing_prediction(input={"prompt": f"track {i}", "duration": 1})
        for i in range(7)
    ]
    async with make_client(emulator) as client:
        listed = [p["id"] async for p in client.predictions.list()]
    assert sorted(listed) == sorted(made)
    assert len(listed) == len(set(listed)) == 7
    assert emulator.count("GET", "/v1/predictions") == 3


# ---- files ------------------------------------------------------------------------------------


async def test_a_small_upload_is_inlined_as_a_data_url(emulator, tmp_path):
    clip = write_wav(tmp_path / "short.wav", 1.0, rate=16000)  # 32 KB
    async with make_client(emulator) as client:
        uri = await client.files.upload(clip, "audio/wav")
    header, payload = uri.split(",", 1)
    assert header == "data:audio/wav;base64"
    assert base64.b64decode(payload) == clip.read_bytes()
    assert emulator.count("*", "/v1/files") == 0


async def test_a_larger_upload_goes_through_the_files_api_and_feeds_the_run(emulator, tmp_path):
    melody = write_wav(tmp_path / "melody.wav", 5.0)  # 320 KB: above the data URL limit
    async with make_client(emulator) as client:
        url = await client.files.upload(melody)
        prediction = await client.predictions.create(
            {"prompt": "follow this tune", "input_audio": url, "duration": 3}, wait=5
        )
        final = (await collect(client.follow(prediction)))[-1]
    [stored] = emulator.state.files.values()
    assert url == f"{emulator.base_url}/v1/files/{stored.id}"
    assert stored.data == melody.read_bytes()
    assert (stored.name, stored.content_type) == ("melody.wav", "audio/x-wav")
    [sent] = creates_sent(emulator)
    assert sent.json["input"]["input_audio"] == url
    assert final.status == "succeeded", final.error
    assert emulator.prediction(prediction["id"]).input_audio_info is not None  # it decoded


async def test_an_upload_over_100_mb_is_refused_before_sending(emulator, tmp_path):
    huge = tmp_path / "huge.wav"
    with huge.open("wb") as fh:
        fh.truncate(100 * 1024 * 1024 + 1)
    async with make_client(emulator) as client:
        with pytest.raises(AudioError) as refused:
            await client.files.upload(huge)
    assert "input_audio" in str(refused.value) and "100 MB" in str(refused.value)
    assert emulator.requests == []


async def test_a_files_upload_is_retried_on_a_server_error(emulator, tmp_path):
    melody = write_wav(tmp_path / "melody.wav", 5.0)
    emulator.add_fault("status", status=503, method="POST", path="/v1/files", times=1)
    async with make_client(emulator) as client:
        url = await client.files.upload(melody)
    assert url.startswith(f"{emulator.base_url}/v1/files/")
    assert emulator.count("POST", "/v1/files") == 2


# ---- downloads --------------------------------------------------------------------------------


async def test_download_writes_the_output_file_whole(emulator, tmp_path):
    async with make_client(emulator) as client:
        prediction = await client.predictions.create(SIMPLE, wait=5)
        assert prediction["status"] == "succeeded"
        emulator.add_fault("status", status=502, method="GET", path="/delivery/", times=1)
        dest = await client.files.download(prediction["output"], tmp_path / "out" / "take.wav")
    assert dest.read_bytes() == emulator.output_bytes(prediction["id"])
    assert [p.name for p in dest.parent.iterdir()] == ["take.wav"]  # no temporary file left


async def test_download_accepts_a_data_url(emulator, tmp_path):
    payload = b"RIFF....WAVEfmt "
    url = "data:audio/wav;base64," + base64.b64encode(payload).decode()
    async with make_client(emulator) as client:
        dest = await client.files.download(url, tmp_path / "inline.wav")
    assert dest.read_bytes() == payload


async def test_an_expired_output_is_reported_as_expired(emulator, tmp_path):
    async with make_client(emulator) as client:
        prediction = await client.predictions.create(SIMPLE, wait=5)
        emulator.expire_outputs()
        with pytest.raises(OutputExpired) as expired:
            await client.files.download(prediction["output"], tmp_path / "late.wav")
        again = await client.predictions.get(prediction["id"])
    assert "no longer available" in str(expired.value)
    assert not (tmp_path / "late.wav").exists()
    assert again["data_removed"] is True and again["output"] is None


async def test_a_foreign_next_link_is_not_followed_with_the_token(emulator):
    async with make_client(emulator) as client:
        with pytest.raises(ApiError):
            client.api.same_origin("https://elsewhere.example/v1/predictions?cursor=x")
        assert client.api.same_origin("/v1/predictions?cursor=x").startswith(emulator.base_url)
