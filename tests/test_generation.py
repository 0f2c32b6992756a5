"""One run end to end through the generation service, against the emulator over real HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.audio import probe
from services.errors import RequestInvalid, StudioError
from services.generation import GenerationService
from services.library import Library, RunRecord
from services.musicgen import GenerationRequest
from tests.emulator import Emulator
from tests.support.audio_files import FORMATS, make_tone
from tests.support.interrupt import cancel_when, kill, start_generation_process, wait_until
from tests.support.services import make_service


async def run_all(service: GenerationService, request: GenerationRequest, token: str, **kw):
    return [u async for u in service.generate(request, token=token, owner=None, **kw)]


async def test_a_run_is_followed_downloaded_and_filed(emulator, tmp_path):
    emulator.configure(run_seconds=1.0, max_wait_seconds=0.2)
    service = make_service(emulator, tmp_path)
    request = GenerationRequest(prompt="lo-fi piano with rain", duration=3, seed=1234)

    updates = await run_all(service, request, emulator.token)

    final = updates[-1]
    assert final.status == "succeeded", final.error
    assert final.seed == 1234
    statuses = [u.status for u in updates]
    assert "processing" in statuses
    progress = [u.progress for u in updates if u.progress]
    assert progress and progress[-1].done == progress[-1].total == 150
    audio = Path(final.audio_path)
    assert audio.is_file() and audio.is_relative_to(tmp_path)
    info = probe(audio)
    assert info.seconds == pytest.approx(3, abs=0.2) and info.channels == 2
    record = Library(tmp_path).get(final.run_id)
    assert record.status == "succeeded" and record.seed == 1234
    assert record.prediction_id == final.prediction_id
    assert record.predict_time is not None
    assert "Using seed 1234" in record.logs_tail
    summary = service.summary(final.run_id, None)
    assert summary["prediction_id"] == final.prediction_id and summary["seed"] == 1234
    assert summary["web_url"] == f"https://replicate.com/p/{final.prediction_id}"


async def test_a_random_seed_is_learned_from_the_logs(emulator, tmp_path):
    service = make_service(emulator, tmp_path)
    updates = await run_all(service, GenerationRequest(prompt="drums", duration=1), emulator.token)
    assert updates[-1].seed is not None
    assert Library(tmp_path).get(updates[-1].run_id).seed == updates[-1].seed


@pytest.mark.parametrize("fmt", sorted(FORMATS))
async def test_a_melody_in_each_accepted_format_reaches_the_model_as_audio(emulator, tmp_path, fmt):
    clip = make_tone(tmp_path / f"melody.{fmt}", 2.0, fmt=fmt)
    service = make_service(emulator, tmp_path / "data")
    request = GenerationRequest(
        prompt="strings", duration=3, model_version="melody-large", input_audio=str(clip)
    )

    updates = await run_all(service, request, emulator.token)

    assert updates[-1].status == "succeeded", updates[-1].error
    received = emulator.prediction(updates[-1].prediction_id).input_audio_info
    assert received is not None
    assert received["duration"] == pytest.approx(2.0, abs=0.1)


async def test_a_large_clip_goes_through_the_files_api(emulator, tmp_path):
    clip = make_tone(tmp_path / "long.wav", 12.0, channels=2)  # ~1.5 MB, above the data-URL limit
    service = make_service(emulator, tmp_path / "data")
    request = GenerationRequest(
        prompt="continue", duration=16, continuation=True, input_audio=str(clip)
    )

    updates = await run_all(service, request, emulator.token)

    assert updates[-1].status == "succeeded", updates[-1].error
    assert emulator.count("POST", "/v1/files") == 1
    create = next(
        r for r in emulator.requests if r.method == "POST" and r.path == "/v1/predictions"
    )
    assert create.json["input"]["input_audio"].startswith(emulator.base_url + "/v1/files/")
    # In continuation mode the model returns the prompt slice plus the new audio: 16 s in all.
    assert probe(Path(updates[-1].audio_path)).seconds == pytest.approx(16, abs=0.3)


async def test_one_click_decodes_its_clip_once_and_sends_one_upload_and_one_create(
    emulator, tmp_path, measured_clips
):
    """The page's path (prepare the form's values, then generate what was prepared): the clip
    is measured by validation and that measure is what the upload uses."""
    clip = make_tone(tmp_path / "long.wav", 12.0, channels=2)  # above the data-URL limit
    service = make_service(emulator, tmp_path / "data")
    raw = {"prompt": "continue", "duration": 16, "continuation": True, "input_audio": str(clip)}

    prepared = service.prepare(raw, "replicate")
    updates = [
        u
        async for u in service.generate(
            prepared, token=emulator.token, owner=None, engine="replicate"
        )
    ]

    assert updates[-1].status == "succeeded", updates[-1].error
    assert measured_clips == [clip]
    assert emulator.count("POST", "/v1/files") == 1
    assert emulator.count("POST", "/v1/predictions") == 1


async def test_one_click_parses_its_request_once(emulator, tmp_path, monkeypatch):
    """The form's values are read into a request once: checking, running and filing it use
    that request as it is, never parsing or validating it again."""
    import services.musicgen as schema

    prompts_read: list[object] = []
    real_loosen = schema._loosen

    def counting(spec, value):
        if spec.name == "prompt":
            prompts_read.append(value)
        return real_loosen(spec, value)

    monkeypatch.setattr(schema, "_loosen", counting)
    service = make_service(emulator, tmp_path / "data")

    prepared = service.prepare({"prompt": "one parse", "duration": "4"}, "replicate")
    updates = [
        u
        async for u in service.generate(
            prepared, token=emulator.token, owner=None, engine="replicate"
        )
    ]

    assert updates[-1].status == "succeeded", updates[-1].error
    assert prompts_read == ["one parse"]


async def test_a_refused_request_costs_nothing(emulator, tmp_path):
    service = make_service(emulator, tmp_path)
    request = GenerationRequest(prompt="", duration=8, multi_band_diffusion=True)

    with pytest.raises(RequestInvalid) as caught:
        await run_all(service, request, emulator.token)

    fields = {e.field for e in caught.value.errors}
    assert {"prompt", "multi_band_diffusion"} <= fields
    assert emulator.creates == 0 and emulator.requests == []
    assert Library(tmp_path).list().total == 0


async def test_without_a_token_nothing_is_sent(emulator, tmp_path):
    service = make_service(emulator, tmp_path)
    with pytest.raises(StudioError, match="token"):
        await run_all(service, GenerationRequest(prompt="x"), "")
    assert emulator.requests == []


async def test_an_api_refusal_ends_the_run_with_its_words(emulator, tmp_path):
    emulator.add_fault(
        "status",
        method="POST",
        path="/v1/predictions",
        status=402,
        body={
            "title": "Insufficient credit",
            "detail": "You have insufficient credit.",
            "status": 402,
        },
    )
    service = make_service(emulator, tmp_path)
    updates = await run_all(service, GenerationRequest(prompt="x", duration=1), emulator.token)
    assert updates[-1].status == "failed"
    assert "insufficient credit" in updates[-1].error
    assert Library(tmp_path).get(updates[-1].run_id).status == "failed"


async def test_cancel_mid_run_cancels_on_replicate_and_keeps_the_record(emulator, tmp_path):
    emulator.configure(run_seconds=20.0)
    service = make_service(emulator, tmp_path)
    seen = await cancel_when(
        service.generate(
            GenerationRequest(prompt="long drone", duration=8), token=emulator.token, owner=None
        ),
        lambda seen: any(u.status == "processing" for u in seen),
    )

    prediction_id = next(u.prediction_id for u in seen if u.prediction_id)
    assert emulator.status(prediction_id) == "canceled"
    record = Library(tmp_path).get(seen[-1].run_id)
    assert record.status == "canceled"


async def test_closing_the_run_early_cancels_it_too(emulator, tmp_path):
    # Gradio may close the generator instead of cancelling the task: same outcome.
    emulator.configure(run_seconds=20.0, max_wait_seconds=0.2)
    service = make_service(emulator, tmp_path)
    run = service.generate(
        GenerationRequest(prompt="drone", duration=8), token=emulator.token, owner=None
    )
    async for update in run:
        if update.status == "processing":
            break
    await run.aclose()

    assert emulator.status(update.prediction_id) == "canceled"
    assert Library(tmp_path).get(update.run_id).status == "canceled"


def kill_once_on_replicate(emulator: Emulator, data_dir: Path, duration: int) -> RunRecord:
    """A run made in a process of its own, killed once its prediction is on Replicate; returns
    the record the process left in flight."""
    process = start_generation_process(emulator, data_dir, duration)
    library = Library(data_dir)
    wait_until(lambda: library.in_flight() and library.in_flight()[0].prediction_id)
    kill(process)
    return library.in_flight()[0]


async def test_a_killed_process_is_resumed_on_the_next_start(emulator, tmp_path):
    emulator.configure(run_seconds=3.0, max_wait_seconds=0.5)
    record = kill_once_on_replicate(emulator, tmp_path, 4)
    assert record.status in ("starting", "processing")

    service = make_service(emulator, tmp_path, REPLICATE_API_TOKEN=emulator.token)
    settled = await service.resume_in_flight()

    assert settled == [record.id]
    done = Library(tmp_path).get(record.id)
    assert done.status == "succeeded"
    assert probe(Library(tmp_path).audio_file(done)).seconds == pytest.approx(4, abs=0.2)
    assert emulator.creates == 1


@pytest.mark.parametrize("with_melody", [False, True])
async def test_a_run_killed_during_a_blocking_create_is_found_and_resumed(
    emulator, tmp_path, with_melody
):
    emulator.configure(queue_seconds=0.6, run_seconds=0.3)  # ends within the 1 s Prefer: wait
    melody = make_tone(tmp_path / "melody.wav", 2.0) if with_melody else None
    process = start_generation_process(emulator, tmp_path / "data", 4, melody)
    wait_until(lambda: emulator.creates == 1)
    kill(process)  # the create's answer, and so the prediction id, never reached the library
    library = Library(tmp_path / "data")
    (record,) = library.in_flight()
    assert record.prediction_id is None

    service = make_service(emulator, tmp_path / "data", REPLICATE_API_TOKEN=emulator.token)
    await service.resume_in_flight()

    done = library.get(record.id)
    assert done.status == "succeeded" and done.prediction_id
    assert emulator.creates == 1


async def test_an_output_that_expired_before_it_was_fetched_is_recorded_as_lost(emulator, tmp_path):
    emulator.configure(run_seconds=1.0, max_wait_seconds=0.2)
    record = kill_once_on_replicate(emulator, tmp_path, 2)
    emulator.wait_for(record.prediction_id, "succeeded")
    emulator.expire_outputs()

    service = make_service(emulator, tmp_path, REPLICATE_API_TOKEN=emulator.token)
    await service.resume_in_flight()

    lost = Library(tmp_path).get(record.id)
    assert lost.status == "lost"
    assert "Replicate" in lost.error
    assert lost.request["prompt"] == "a run that outlives its process"
