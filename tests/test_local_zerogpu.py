"""On a ZeroGPU Space generation runs inside `spaces.GPU` with a duration from its takes; off a
Space nothing is wrapped and `spaces` is not even imported.

A real ZeroGPU needs Hugging Face's device API, which no test machine has: the on-Space case
uses a stand-in `spaces` module (a real module object with a `GPU` that records its duration and
calls through), the only way to see what the engine hands to `spaces.GPU`.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

import pytest

from services.engines.local.config import LocalConfig
from services.engines.local.zerogpu import (
    MAX_SECONDS,
    GpuCalls,
    duration_for,
    zero_gpu_enabled,
)
from services.musicgen import GenerationRequest


def take(seconds: int) -> GenerationRequest:
    return GenerationRequest(prompt="calm piano", duration=seconds, model_version="")


def test_shorter_takes_declare_less_gpu_time_and_batches_a_little_more() -> None:
    assert duration_for(take(2)) < duration_for(take(8)) < duration_for(take(30))
    # A batch runs to its longest take; each extra row costs a share, not a whole take.
    four = duration_for(take(8), take(2), take(8), take(4))
    assert duration_for(take(8)) < four < 4 * duration_for(take(8))
    assert duration_for(take(8), take(30)) == duration_for(take(30), take(8))
    assert duration_for(*[take(30)] * 12) == MAX_SECONDS  # never above ZeroGPU's limit


def test_off_a_space_nothing_is_wrapped_and_spaces_is_not_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    monkeypatch.delitem(sys.modules, "spaces", raising=False)
    assert not LocalConfig.from_env({}).zero_gpu
    assert not zero_gpu_enabled({})
    assert zero_gpu_enabled({"SPACES_ZERO_GPU": "true"}) == _spaces_installed()
    calls = GpuCalls(enabled=False)
    assert calls.run(lambda a, b: a + b, [take(8)], 2, 3) == 5
    assert "spaces" not in sys.modules


def _spaces_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("spaces") is not None


def test_on_zero_gpu_the_call_runs_inside_spaces_gpu_with_its_duration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    declared: list[int] = []

    def gpu(*, duration: Callable[..., int]) -> Callable[[Callable[..., Any]], Any]:
        def decorate(task: Callable[..., Any]) -> Callable[..., Any]:
            def on_gpu(*args: Any) -> Any:
                declared.append(duration(*args))  # spaces asks with the call's own arguments
                return task(*args)

            return on_gpu

        return decorate

    stand_in = types.ModuleType("spaces")
    stand_in.GPU = gpu  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "spaces", stand_in)
    calls = GpuCalls(enabled=True)
    assert calls.run(lambda a, b: a * b, [take(5)], 6, 7) == 42
    assert calls.run(lambda: "batch", [take(5), take(20)]) == "batch"
    assert declared == [duration_for(take(5)), duration_for(take(5), take(20))]
