"""Shared pytest fixtures. The emulator fixtures come first; others may append theirs below."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.emulator import Emulator, EmulatorConfig, run_emulator


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    """Fast test timings; override this fixture in a module to change the emulator's knobs."""
    return EmulatorConfig.fast()


@pytest.fixture
def emulator(emulator_config: EmulatorConfig) -> Iterator[Emulator]:
    """A fresh Replicate emulator on 127.0.0.1 (free port) for one test."""
    with run_emulator(emulator_config) as running:
        yield running
