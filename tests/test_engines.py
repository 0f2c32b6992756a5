"""Which engine runs: MUSICGEN_ENGINE, the server token, a visitor's token, a deployment.

Replicate runs go over real HTTP to the emulator; the local engine here is the real class, whose
model is only loaded by a run (these tests never start one: tests/test_local_engine.py does).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from services.engines.local import LocalConfig, LocalEngine
from services.engines.protocol import Engine
from services.engines.registry import (
    NO_LOCAL_MESSAGE,
    NO_TOKEN_MESSAGE,
    REPLICATE_OFF_MESSAGE,
    Engines,
)
from services.errors import RequestInvalid, StudioError
from services.generation import GenerationService
from services.library import Library
from services.library.schema import MIGRATIONS
from services.musicgen import GenerationRequest
from services.settings import Settings
from tests.emulator.config import DEFAULT_DEPLOYMENT


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"MUSICGEN_DATA_DIR": str(tmp_path), **env})


@pytest.fixture
def local() -> LocalEngine:
    return LocalEngine(LocalConfig())


def names(engines: Engines) -> list[str]:
    return [option.name for option in engines.options()]


def test_auto_without_a_server_token_makes_music_here_and_a_token_unlocks_replicate(
    tmp_path, local
):
    engines = Engines(settings(tmp_path), local)
    assert names(engines) == ["local", "replicate"]  # the default first
    assert engines.default_name() == "local"
    assert engines.needs_visitor_token  # the token field stays, to unlock Replicate
    assert engines.open(None, None) is local  # no token needed for a first take
    with pytest.raises(StudioError, match="No Replicate API token"):
        engines.open("replicate", None)
    assert isinstance(engines.open("replicate", "visitor-token"), Engine)


def test_auto_with_a_server_token_uses_replicate_and_still_offers_this_machine(tmp_path, local):
    engines = Engines(settings(tmp_path, REPLICATE_API_TOKEN="server-token"), local)
    assert names(engines) == ["replicate", "local"]
    assert not engines.needs_visitor_token
    assert engines.open(None, None).name == "replicate"
    assert engines.open("local", None) is local


def test_auto_without_the_local_packages_is_todays_studio(tmp_path):
    engines = Engines(settings(tmp_path), None)
    assert names(engines) == ["replicate"]
    with pytest.raises(StudioError) as refused:
        engines.open(None, None)
    assert str(refused.value) == NO_TOKEN_MESSAGE
    with pytest.raises(StudioError) as refused:
        engines.open("local", None)
    assert str(refused.value) == NO_LOCAL_MESSAGE


def test_engine_local_switches_replicate_off_even_with_a_token(tmp_path, local):
    engines = Engines(settings(tmp_path, MUSICGEN_ENGINE="local"), local)
    assert names(engines) == ["local"]
    assert not engines.needs_visitor_token  # no token field on the page
    with pytest.raises(StudioError) as refused:
        engines.open("replicate", "visitor-token")
    assert str(refused.value) == REPLICATE_OFF_MESSAGE


def test_engine_replicate_never_offers_this_machine(tmp_path, local):
    engines = Engines(settings(tmp_path, MUSICGEN_ENGINE="replicate"), local)
    assert names(engines) == ["replicate"]
    assert engines.local is None


def test_a_wrong_engine_setting_stops_the_app_with_its_name(tmp_path):
    with pytest.raises(ValueError, match="MUSICGEN_ENGINE"):
        settings(tmp_path, MUSICGEN_ENGINE="gpu")
    with pytest.raises(ValueError, match="MUSICGEN_DEPLOYMENT"):
        settings(tmp_path, MUSICGEN_DEPLOYMENT="just-a-name")


def test_each_engine_validates_its_own_models_before_anything_runs(tmp_path, local):
    service = GenerationService(settings(tmp_path), Library(tmp_path), local=local)
    # Replicate's model names mean nothing locally, and the other way round.
    with pytest.raises(RequestInvalid) as refused:
        service.prepare({"prompt": "x", "model_version": "stereo-large"}, "local")
    assert [e.field for e in refused.value.errors] == ["model_version"]
    assert "facebook/musicgen-small" in str(refused.value.errors[0])
    with pytest.raises(RequestInvalid) as refused:
        service.prepare({"prompt": "x", "model_version": "facebook/musicgen-small"}, "replicate")
    assert [e.field for e in refused.value.errors] == ["model_version"]
    # Left empty, each engine's default is used.
    request = service.prepare({"prompt": "x"}, "local").request
    assert request.model_version == local.default_model()
    request = service.prepare({"prompt": "x"}, "replicate").request
    assert request.model_version == "stereo-melody-large"
    # Multi-band diffusion exists only on Replicate.
    with pytest.raises(RequestInvalid) as refused:
        service.prepare({"prompt": "x", "multi_band_diffusion": True}, "local")
    assert [e.field for e in refused.value.errors] == ["multi_band_diffusion"]


async def test_a_deployment_gets_the_runs_and_the_record_says_so(emulator, tmp_path):
    service = GenerationService(
        settings(
            tmp_path,
            REPLICATE_BASE_URL=emulator.base_url,
            MUSICGEN_DEPLOYMENT=DEFAULT_DEPLOYMENT,
            MUSICGEN_ENGINE="replicate",
        ),
        Library(tmp_path),
    )
    request = GenerationRequest(prompt="dub techno chords", duration=2, seed=7)

    updates = [u async for u in service.generate(request, token=emulator.token, owner=None)]

    assert updates[-1].status == "succeeded", updates[-1].error
    creates = [r for r in emulator.requests if r.method == "POST" and "predictions" in r.path]
    assert [r.path for r in creates] == [f"/v1/deployments/{DEFAULT_DEPLOYMENT}/predictions"]
    assert "version" not in creates[0].json  # the deployment decides the version
    assert creates[0].json["input"]["prompt"] == "dub techno chords"
    record = Library(tmp_path).get(updates[-1].run_id)
    assert (record.engine, record.checkpoint, record.device) == (
        "replicate",
        DEFAULT_DEPLOYMENT,
        None,
    )


def test_a_library_from_before_the_engines_keeps_its_runs_as_replicate_runs(tmp_path):
    db = tmp_path / "library.sqlite3"
    conn = sqlite3.connect(db)
    MIGRATIONS[0](conn)  # the first schema, as the studio wrote it before engines existed
    conn.execute(
        "INSERT INTO runs (id, request, status, created_at, prediction_id)"
        " VALUES ('old', '{\"prompt\": \"old take\"}', 'failed', 1.0, 'p1')"
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()

    lib = Library(tmp_path)
    old = lib.get("old")
    assert old is not None and old.prompt == "old take"
    assert (old.engine, old.checkpoint, old.device, old.realtime_factor) == (
        "replicate",
        None,
        None,
        None,
    )
    new = lib.create_pending(None, {"prompt": "new"}, engine="local")
    lib.update(new.id, checkpoint="facebook/musicgen-small", device="cpu", realtime_factor=2.5)
    again = Library(tmp_path).get(new.id)
    assert (again.engine, again.checkpoint, again.device, again.realtime_factor) == (
        "local",
        "facebook/musicgen-small",
        "cpu",
        2.5,
    )


async def test_every_run_of_every_visitor_shares_the_processs_connections(emulator, tmp_path):
    """One pool per process: runs (here of two visitors' tokens) reuse its kept-alive
    connections instead of opening their own; closing it at shutdown closes them all."""
    emulator.configure(run_seconds=0.2)
    service = GenerationService(
        settings(tmp_path, REPLICATE_BASE_URL=emulator.base_url, MUSICGEN_ENGINE="replicate"),
        Library(tmp_path),
    )
    tokens = [emulator.token, "r8_second_visitor_000000000000000000000"]
    emulator.configure(tokens=tokens)
    for i in range(20):
        request = GenerationRequest(prompt=f"take {i}", duration=1, seed=i + 1)
        run = service.generate(request, token=tokens[i % 2], owner=f"visitor-{i % 2}")
        updates = [u async for u in run]
        assert updates[-1].status == "succeeded", updates[-1].error

    peers = {r.peer for r in emulator.requests}
    assert len(emulator.requests) >= 40  # a create and a download per run at least
    # Connections are kept and reused: at most one per shard of the pool (16), not one per
    # request or per run.
    assert len(peers) <= 16
    clients = service.engines.pool.client(), service.engines.pool.client()
    await service.engines.aclose()
    assert all(client.is_closed for client in clients)
