"""Generation inside `spaces.GPU` on a ZeroGPU Space; off a Space, a plain call.

ZeroGPU lends a GPU per call for a declared number of seconds, and serves shorter declarations
first: each call declares what its takes need (`duration_for`), so a 5 s take does not wait
behind a 30 s one. `spaces` runs the call in a forked worker and pickles its arguments and its
result, so the call gets only plain data: no callbacks. Progress, previews and a cancel within
the take therefore do not cross into the GPU worker (the take reports when it is done).
"""

from __future__ import annotations

import importlib.util
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from services.musicgen import GenerationRequest

T = TypeVar("T")

# Seconds of GPU a call asks for: moving the model to the GPU and encoding the prompt, then per
# second of audio of the longest take (musicgen-small at fp16 makes ~50 steps a second on an
# A100-class GPU; melody and large checkpoints are slower, so the margin is wide), plus a share
# per extra row of a batch. ZeroGPU refuses declarations above its limit: capped there.
SETUP_SECONDS = 10
SECONDS_PER_AUDIO_SECOND = 2.0
EXTRA_ROW_SHARE = 0.25
MAX_SECONDS = 120


def zero_gpu_enabled(env: Mapping[str, str]) -> bool:
    """On a ZeroGPU Space: `SPACES_ZERO_GPU` set and the `spaces` package installed.

    Checked without importing `spaces` (which patches torch on import).
    """
    flag = env.get("SPACES_ZERO_GPU", "").strip().lower()
    return flag in ("1", "t", "true") and importlib.util.find_spec("spaces") is not None


def duration_for(*requests: GenerationRequest) -> int:
    """GPU seconds to declare for one call making `requests` together (one batch)."""
    if not requests:
        return SETUP_SECONDS
    longest = max(float(r.duration) for r in requests)
    rows = 1 + EXTRA_ROW_SHARE * (len(requests) - 1)
    return min(MAX_SECONDS, math.ceil(SETUP_SECONDS + longest * SECONDS_PER_AUDIO_SECOND * rows))


class GpuCalls:
    """Runs a generation call on ZeroGPU's GPU when on a ZeroGPU Space, else directly."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._wrapped: Callable[..., Any] | None = None

    def run(self, task: Callable[..., T], requests: Sequence[GenerationRequest], *args: Any) -> T:
        """`task(*args)`, inside `spaces.GPU` with `duration_for(*requests)` on ZeroGPU.

        `task` must be a module-level function and `args` plain data (they are pickled there).
        """
        if not self.enabled:
            return task(*args)
        if self._wrapped is None:
            self._wrapped = _on_gpu()
        result: T = self._wrapped(task, tuple(requests), *args)
        return result


def _call(task: Callable[..., T], requests: tuple[GenerationRequest, ...], *args: Any) -> T:
    return task(*args)


def _declared(task: Callable[..., Any], requests: tuple[GenerationRequest, ...], *args: Any) -> int:
    """`spaces` calls this with the call's own arguments to learn its duration."""
    return duration_for(*requests)


def _on_gpu() -> Callable[..., Any]:
    """`_call` wrapped by `spaces.GPU` (spaces keeps one decorated copy per function)."""
    import spaces  # type: ignore[import-not-found, import-untyped, unused-ignore]  # only on a Space

    wrapped: Callable[..., Any] = spaces.GPU(duration=_declared)(_call)
    return wrapped


def _silent(*_: Any) -> None:
    """Progress and previews have nobody to go to inside the GPU worker."""


def synthesize_batch_on_gpu(
    loaded: Any, takes: Sequence[tuple[GenerationRequest, int, Path]], preview_seconds: float
) -> Any:
    """`synth.synthesize_batch` of (request, seed, workdir) takes, with hooks made inside the
    worker (callbacks can't be pickled)."""
    from services.engines.local.synth import Hooks, Row, synthesize_batch

    rows = [
        Row(request, seed, workdir, Hooks(_silent, _silent, _silent, threading.Event()))
        for request, seed, workdir in takes
    ]
    # Nobody hears a preview from inside the worker (the engine passes 0 seconds): no lead.
    return synthesize_batch(loaded, rows, preview_seconds=preview_seconds, preview_lead_seconds=0)
