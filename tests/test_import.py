"""Importing an account's earlier runs: real HTTP to the emulator, a real library on disk."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from services.library import Library
from services.library.importer import ImportReport, import_account, request_from_input
from services.musicgen import GenerationRequest
from services.replicate import ReplicateClient
from services.replicate.retry import RetryPolicy
from tests.emulator import MUSICGEN_VERSION, EmulatorConfig
from tests.support.stored import files_holding, folder_contents

TOKEN = "r8_" + "Qw7eR4tY1uI9oP3aS6dF2gH5jK8lZ0xC4vB7n"  # fake; split so secret scanners skip it
OTHER_MODEL = "stability-ai/sdxl"


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    # Two results a page, so the import has to follow `next` through several pages.
    return EmulatorConfig.fast(tokens=[TOKEN], page_size=2)


@pytest.fixture
async def client(emulator) -> AsyncIterator[ReplicateClient]:
    async with ReplicateClient(
        TOKEN,
        base_url=emulator.base_url,
        version=MUSICGEN_VERSION,
        retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02),
    ) as c:
        yield c


def seed_account(emulator) -> dict[str, str]:
    """An account's history as Replicate keeps it, oldest first."""
    # Well inside Replicate's one-hour retention: at exactly an hour the oldest run's inputs
    # could be removed before the import reads them, depending on how fast the test runs.
    hour_ago = time.time() - 3000
    ids = {
        "failed": emulator.add_existing_prediction(
            status="failed",
            input={"prompt": "too long a jam", "duration": 30, "model_version": "large"},
            error="CUDA out of memory. Tried to allocate 2.00 GiB",
            created_at=hour_ago,
        ),
        "removed": emulator.add_existing_prediction(
            input={"prompt": "an old song"}, data_removed=True, created_at=hour_ago + 60
        ),
        "canceled": emulator.add_existing_prediction(
            status="canceled", input={"prompt": "changed my mind"}, created_at=hour_ago + 120
        ),
        "other": emulator.add_existing_prediction(
            input={"prompt": "a picture"}, created_at=hour_ago + 180
        ),
        "succeeded": emulator.add_existing_prediction(
            input={
                "prompt": "Smooth jazz trio, brushed drums",
                "duration": 2,
                "model_version": "stereo-large",
                "temperature": 0.8,
                "output_format": "mp3",
            },
            seed=1234,
            created_at=hour_ago + 240,
        ),
    }
    emulator.configure(run_seconds=600)  # still running during the whole test
    ids["running"] = emulator.add_existing_prediction(status="processing")
    emulator.configure(run_seconds=None)
    # The emulator only speaks meta/musicgen: present one run as another model's.
    other = emulator.prediction(ids["other"])
    musicgen_json = other.to_json
    other.to_json = lambda base, now: {
        **musicgen_json(base, now),
        "model": OTHER_MODEL,
        "version": "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b",
    }
    return ids


async def test_import_brings_the_accounts_runs_in_once(emulator, client, tmp_path):
    ids = seed_account(emulator)
    lib = Library(tmp_path / "data")

    report = await import_account(client, lib, "alice", version=MUSICGEN_VERSION)

    assert (report.added, report.with_audio, report.removed) == (4, 1, 1)
    assert (report.skipped, report.other_models, report.in_flight) == (0, 1, 1)
    assert report.problems == ()
    assert emulator.count("GET", "/v1/predictions") >= 3  # every page was read
    page = lib.list("alice")
    assert [r.prediction_id for r in page.items] == [
        ids["succeeded"],
        ids["canceled"],
        ids["removed"],
        ids["failed"],
    ]
    by_pid = {r.prediction_id: r for r in page.items}

    ok = by_pid[ids["succeeded"]]
    assert ok.status == "succeeded" and ok.source == "import" and ok.owner == "alice"
    assert lib.audio_file(ok).read_bytes() == emulator.output_bytes(ids["succeeded"])
    assert ok.audio_format == "mp3" and ok.audio_seconds == pytest.approx(2.0, abs=0.2)
    assert ok.seed == 1234 and "Using seed 1234" in ok.logs_tail
    assert (
        ok.request
        == GenerationRequest(
            prompt="Smooth jazz trio, brushed drums",
            duration=2,
            model_version="stereo-large",
            temperature=0.8,
            output_format="mp3",
            seed=1234,
        ).to_dict()
    )
    assert ok.predict_time is not None and ok.predict_time > 0
    assert ok.created_at == pytest.approx(emulator.prediction(ids["succeeded"]).created)
    assert ok.started_at is not None and ok.completed_at >= ok.started_at

    gone = by_pid[ids["removed"]]
    assert gone.status == "lost" and gone.data_removed and not gone.has_audio
    assert "removed this run's audio" in gone.error

    failed = by_pid[ids["failed"]]
    assert failed.status == "failed"
    assert failed.error == "CUDA out of memory. Tried to allocate 2.00 GiB"
    assert failed.request["duration"] == 30 and failed.request["model_version"] == "large"
    assert by_pid[ids["canceled"]].status == "canceled"
    assert lib.find_by_prediction(ids["other"]) is None
    assert lib.find_by_prediction(ids["running"]) is None

    downloads = emulator.count("GET", "/delivery/")
    again = await import_account(client, lib, "alice", version=MUSICGEN_VERSION)
    assert (again.added, again.skipped, again.other_models, again.in_flight) == (0, 4, 1, 1)
    assert again.message.startswith("Nothing new to import")
    assert lib.counts("alice")["total"] == 4
    assert emulator.count("GET", "/delivery/") == downloads  # nothing fetched twice


async def test_a_run_that_finished_since_the_last_import_is_added_next_time(
    emulator, client, tmp_path
):
    lib = Library(tmp_path / "data")
    running = emulator.add_existing_prediction(status="processing", input={"prompt": "soon"})
    first = await import_account(client, lib, None)
    assert (first.added, first.in_flight) == (0, 1)
    emulator.wait_for(running)
    second = await import_account(client, lib, None)
    assert (second.added, second.with_audio) == (1, 1)
    assert lib.find_by_prediction(running).status == "succeeded"


async def test_an_output_that_404s_on_download_is_recorded_lost_with_the_reason(
    emulator, client, tmp_path
):
    lib = Library(tmp_path / "data")
    pid = emulator.add_existing_prediction(input={"prompt": "expired meanwhile"})
    emulator.add_fault("status", path="/delivery/", status=404, times=None)
    report = await import_account(client, lib, None)
    assert (report.added, report.removed, report.with_audio) == (1, 1, 0)
    record = lib.find_by_prediction(pid)
    assert record.status == "lost" and record.data_removed
    assert "removed this run's audio" in record.error
    assert record.request["prompt"] == "expired meanwhile"


async def test_a_passing_download_failure_is_not_recorded_and_is_retried(
    emulator, client, tmp_path
):
    lib = Library(tmp_path / "data")
    pid = emulator.add_existing_prediction(input={"prompt": "flaky network"})
    emulator.add_fault("status", path="/delivery/", status=503, times=None)
    report = await import_account(client, lib, None)
    assert report.added == 0 and len(report.problems) == 1 and pid in report.problems[0]
    assert lib.counts()["total"] == 0
    emulator.clear_faults()
    report = await import_account(client, lib, None)
    assert (report.added, report.with_audio) == (1, 1)
    assert lib.find_by_prediction(pid).status == "succeeded"


async def test_inputs_removed_by_replicate_are_said_so(emulator, client, tmp_path):
    lib = Library(tmp_path / "data")
    emulator.configure(removal_clears_input=True)
    pid = emulator.add_existing_prediction(input={"prompt": "forgotten"}, data_removed=True)
    await import_account(client, lib, None)
    record = lib.find_by_prediction(pid)
    assert record.status == "lost" and record.request == {}
    assert "settings were removed too" in record.error


async def test_two_visitors_importing_keep_separate_copies(emulator, client, tmp_path):
    lib = Library(tmp_path / "data")
    pid = emulator.add_existing_prediction(input={"prompt": "shared account"})
    alice = await import_account(client, lib, "alice")
    bob = await import_account(client, lib, "bob")
    assert alice.added == bob.added == 1
    a, b = lib.find_by_prediction(pid, "alice"), lib.find_by_prediction(pid, "bob")
    assert a.id != b.id and lib.audio_file(a) != lib.audio_file(b)
    assert lib.get(a.id, "bob") is None
    assert lib.delete(a.id, "alice") and lib.audio_file(b).is_file()


async def test_no_token_in_the_data_folder_after_an_import(emulator, client, tmp_path):
    data = tmp_path / "data"
    lib = Library(data)
    seed_account(emulator)
    report = await import_account(client, lib, "alice", version=MUSICGEN_VERSION)
    assert report.with_audio == 1
    for run_id in report.run_ids:
        lib.export(run_id, "alice", data / "exports")
    lib.close()  # fold the write-ahead log into the database file
    assert len(folder_contents(data)) >= 6
    assert files_holding(data, TOKEN) == []


def test_api_input_maps_back_to_the_request():
    req = request_from_input(
        {
            "prompt": "x",
            "input_audio": "data:audio/wav;base64," + "A" * 5000,
            "continuation": True,
            "continuation_end": 4,
            "seed": -1,
            "some_future_input": 1,
        }
    )
    assert req["input_audio"].startswith("data: URL") and len(req["input_audio"]) < 100
    assert req["continuation"] is True and req["continuation_end"] == 4
    assert req["seed"] is None and "some_future_input" not in req
    assert set(req) == set(GenerationRequest().to_dict())
    url = "https://api.replicate.com/v1/files/abc"
    assert request_from_input({"input_audio": url})["input_audio"] == url
    assert request_from_input({}) == {} and request_from_input(None) == {}


def test_report_message_says_what_happened():
    msg = ImportReport(added=3, with_audio=2, removed=1, skipped=4, in_flight=1).message
    assert msg == (
        "Imported 3 run(s): 2 with audio, 1 whose audio Replicate had already removed; "
        "4 already in your library; 1 still running (import again once they finish)."
    )
