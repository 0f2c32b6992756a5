"""The local engine as the tests build it: on the tiny random-weight checkpoints, on the CPU, and
shut down when done. One place, so a change of the engine's construction is one edit."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from services.engines.local import LocalConfig, LocalEngine
from services.musicgen import GenerationRequest
from tests.support.tiny_musicgen import TinyCheckpoints


def tiny_config(checkpoints: TinyCheckpoints, **changes: Any) -> LocalConfig:
    """The settings MUSICGEN_LOCAL_MODEL / MUSICGEN_LOCAL_MELODY_MODEL (the tiny text and melody
    folders) and MUSICGEN_DEVICE=cpu give; `changes` replace fields (preview_seconds, ...)."""
    config = LocalConfig.from_env(
        {
            "MUSICGEN_LOCAL_MODEL": str(checkpoints.text),
            "MUSICGEN_LOCAL_MELODY_MODEL": str(checkpoints.melody),
            "MUSICGEN_DEVICE": "cpu",
        }
    )
    return dataclasses.replace(config, **changes)


@contextlib.contextmanager
def tiny_engine(checkpoints: TinyCheckpoints, **changes: Any) -> Iterator[LocalEngine]:
    """A local engine on `tiny_config(checkpoints, **changes)`, shut down when the block ends."""
    local = LocalEngine(tiny_config(checkpoints, **changes))
    try:
        yield local
    finally:
        local.shutdown()


def tiny_request(**fields: Any) -> GenerationRequest:
    """A 1 s "calm piano" request on the engine's default checkpoint, with `fields` set."""
    return GenerationRequest(
        **{"prompt": "calm piano", "duration": 1, "model_version": "", **fields}
    )
