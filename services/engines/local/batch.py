"""Which waiting runs can share one `generate` call, and how many rows a call takes by default.

Rows of one call share the checkpoint and whatever a clip gives (the continued slice, or the
melody's chroma): a clip is the same for every take of a group of variations, and runs without
a clip always fit together. Prompt, duration, seed, sampling settings and guidance are per row
(`row_sampler`), so they never keep runs apart.
"""

from __future__ import annotations

from collections.abc import Hashable

from services.musicgen import GenerationRequest

# Rows per `generate` call when MUSICGEN_LOCAL_MAX_BATCH is unset. CPU: measured on this
# project's 2-core machine with musicgen-small's architecture, fp32 (bench.local_batching): four
# 2 s takes in one call took 1.9-2.1x one take's wall time (each take about half its time
# alone); more rows were not measured. CUDA and MPS are not measured here: 8 follows the
# facebook/MusicGen Space, which batches up to 12 visitors.
DEFAULT_MAX_BATCH = {"cpu": 4, "cuda": 8, "mps": 4}


def default_max_batch(device: str) -> int:
    return DEFAULT_MAX_BATCH.get(device, 4)


def batch_key(checkpoint: str, request: GenerationRequest) -> Hashable:
    """Runs with equal keys can be made in one call."""
    if not request.input_audio:
        return (checkpoint,)
    return (
        checkpoint,
        request.input_audio,
        bool(request.continuation),
        request.uses_melody,
        float(request.continuation_start),
        None if request.continuation_end is None else float(request.continuation_end),
    )
