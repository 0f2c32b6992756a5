"""Loaded checkpoints: at most MUSICGEN_LOCAL_MAX_MODELS, least recently used out first; the
default one loads in the background at start, and a run meanwhile waits for it, saying so; the
precision setting decides what the decoder runs at. On the tiny checkpoints."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("transformers")

import torch

from services.engines.local import LocalConfig, LocalEngine
from services.engines.local.checkpoints import Device
from services.engines.local.loader import LoadedModel, load
from services.engines.local.models import ModelCache
from services.engines.local.precision import resolve_precision
from services.engines.registry import Engines
from services.musicgen import GenerationRequest
from services.settings import Settings
from tests.support.tiny_musicgen import TinyCheckpoints


def test_at_most_max_models_stay_loaded_least_recently_used_out_first(
    tiny_musicgen: TinyCheckpoints,
) -> None:
    text, melody, stereo = (str(p) for p in dataclasses.astuple(tiny_musicgen))
    loads: list[str] = []

    def counting(checkpoint: str, say: Callable[[str], None]) -> LoadedModel:
        loads.append(checkpoint)
        return load(checkpoint, Device("cpu", "fp32"), say)

    cache = ModelCache(counting, lambda: 2)
    quiet: Callable[[str], None] = lambda line: None  # noqa: E731
    first = cache.get(text, quiet)
    cache.get(melody, quiet)
    assert cache.get(text, quiet) is first  # kept: no second load
    cache.get(stereo, quiet)  # the melody one was used least recently: it goes
    assert cache.loaded() == [text, stereo]
    cache.get(melody, quiet)
    assert cache.loaded() == [stereo, melody]
    assert loads == [text, melody, stereo, melody]
    assert LocalConfig().models_on("cpu") == 1 and LocalConfig(max_models=3).models_on("cpu") == 3
    assert LocalConfig.from_env({"MUSICGEN_LOCAL_MAX_MODELS": "2"}).max_models == 2
    assert LocalConfig.from_env({"MUSICGEN_LOCAL_MAX_MODELS": "none"}).max_models is None


async def test_a_run_during_the_start_up_load_waits_for_it_and_says_so(
    tiny_musicgen: TinyCheckpoints, tmp_path: Path
) -> None:
    release = threading.Event()
    started = threading.Event()
    engine = LocalEngine(
        LocalConfig(default_model=str(tiny_musicgen.text), device="cpu", preview_seconds=0)
    )
    real_load = engine._load

    def slow_load(checkpoint: str, say: Callable[[str], None]) -> LoadedModel:
        say(f"Downloading {checkpoint}: 1 / 2 MB")
        started.set()
        release.wait(30)  # held until the run below is waiting
        return real_load(checkpoint, say)

    engine._models = ModelCache(slow_load, lambda: 1)
    engines = Engines(Settings.from_env({"MUSICGEN_DATA_DIR": str(tmp_path)}), engine)
    assert engines.load_line() == ("", False)  # nothing loads until the app starts
    try:
        engines.warm_up()  # as the app's start does
        assert started.wait(30)
        line, loading = engines.load_line()  # what the page shows
        assert loading and line.startswith(f"Loading the model {tiny_musicgen.text}")
        assert "1 / 2 MB" in line
        req = GenerationRequest(prompt="calm piano", duration=1, model_version="", seed=3)
        run = await engine.start(req, workdir=tmp_path)
        logs: list[str] = []
        async for update in engine.follow(run, started=time.monotonic(), workdir=tmp_path):
            logs.extend(update.new_logs)
            if any("Waiting for the model" in line for line in logs):
                release.set()
            final = update
        engine.preload()  # returns once the start-up load is done
    finally:
        release.set()
        engine.shutdown()
    assert final.status == "succeeded", final.error
    waiting = [line for line in logs if line.startswith("Waiting for the model")]
    assert waiting == [f"Waiting for the model {tiny_musicgen.text} to finish loading..."]
    assert f"Model {tiny_musicgen.text} loaded successfully." in logs
    line, loading = engines.load_line()
    assert not loading and line.endswith("is loaded: runs start at once.")


def test_precision_auto_is_int8_on_cpu_and_fp32_is_one_setting_away(
    tiny_musicgen: TinyCheckpoints,
) -> None:
    assert resolve_precision("auto", "cpu") == "int8"
    assert resolve_precision("auto", "cuda") == resolve_precision("int8", "cuda") == "fp16"
    assert LocalConfig.from_env({"MUSICGEN_LOCAL_PRECISION": "FP32"}).precision == "fp32"
    assert LocalConfig.from_env({"MUSICGEN_LOCAL_PRECISION": "fp64"}).precision == "auto"
    quiet: Callable[[str], None] = lambda line: None  # noqa: E731
    int8 = load(str(tiny_musicgen.text), Device("cpu", "int8"), quiet).model
    fp32 = load(str(tiny_musicgen.text), Device("cpu", "fp32"), quiet).model
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    assert isinstance(int8.decoder.lm_heads[0], dynamic)
    assert not any(isinstance(m, torch.nn.Linear) for m in int8.decoder.modules())
    assert not any(isinstance(m, dynamic) for m in fp32.modules())
    # The text encoder and EnCodec stay float32 either way.
    assert isinstance(int8.text_encoder.encoder.block[0].layer[0].SelfAttention.q, torch.nn.Linear)


def test_a_start_without_the_checkpoint_logs_why_in_words_not_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as a machine with no connection
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # and nothing downloaded before
    engine = LocalEngine(LocalConfig(default_model="facebook/musicgen-small", device="cpu"))
    try:
        with caplog.at_level(logging.WARNING):
            engine.warm_up().join(60)
    finally:
        engine.shutdown()
    (record,) = [r for r in caplog.records if "at start failed" in r.getMessage()]
    assert "facebook/musicgen-small is not on this machine" in record.getMessage()
    assert record.exc_info is None  # the operator reads one line, not a stack
