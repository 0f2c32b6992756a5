"""Shared pytest fixtures. The emulator fixtures come first; others may append theirs below."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.emulator import Emulator, EmulatorConfig, run_emulator

if TYPE_CHECKING:  # importing it imports torch: only inside the fixture at run time
    from tests.support.tiny_musicgen import TinyCheckpoints


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    """Fast test timings; override this fixture in a module to change the emulator's knobs."""
    return EmulatorConfig.fast()


@pytest.fixture
def emulator(emulator_config: EmulatorConfig) -> Iterator[Emulator]:
    """A fresh Replicate emulator on 127.0.0.1 (free port) for one test."""
    with run_emulator(emulator_config) as running:
        yield running


@pytest.fixture(scope="session")
def tiny_musicgen(tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoints:
    """Tiny random-weight MusicGen checkpoints (text, melody, stereo), built once per session.

    Returns `tests.support.tiny_musicgen.TinyCheckpoints`: three folders, each usable as
    `MUSICGEN_LOCAL_MODEL` / `MUSICGEN_LOCAL_MELODY_MODEL`. Skips without torch/transformers.
    """
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.support.tiny_musicgen import build_all

    return build_all(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture
def measured_clips(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every clip the app measures by decoding (validation and uploads alike), in order."""
    from services import audio

    measured: list[Path] = []
    real_measure = audio.measure

    def counting_measure(path: Any, **options: Any) -> Any:
        measured.append(Path(path))
        return real_measure(path, **options)

    monkeypatch.setattr(audio, "measure", counting_measure)
    monkeypatch.setattr("services.generation.policy.measure", counting_measure)
    return measured
