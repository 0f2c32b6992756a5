"""One generation, blocking: request -> tokens -> audio samples. Runs on the engine's worker thread.

Everything a run needs from the outside world comes through `Hooks` (progress, previews, log
lines, the cancel flag), so this module knows nothing of asyncio or of the queue.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.engines.local.audio_io import read_clip
from services.engines.local.chroma import chroma_features
from services.engines.local.loader import LoadedModel
from services.engines.local.normalize import normalize
from services.engines.local.preview import StreamDecoder
from services.engines.local.row_sampler import RowSampler, RowSettings, generate_kwargs
from services.errors import StudioError
from services.musicgen import GenerationRequest


class Canceled(Exception):
    """The run was canceled; raised from inside `generate` to stop at once."""


@dataclass
class Hooks:
    """How a run talks back while it works; the callables are called on the worker thread."""

    progress: Callable[[int, int], None]
    preview: Callable[[Path], None]
    log: Callable[[str], None]
    canceled: threading.Event


@dataclass(frozen=True)
class SynthResult:
    """Normalized samples (channels, n) and how long making them took."""

    samples: np.ndarray
    sampling_rate: int
    predict_time: float

    @property
    def seconds(self) -> float:
        return float(self.samples.shape[-1]) / float(self.sampling_rate)


def sampling_kwargs(request: GenerationRequest) -> dict[str, Any]:
    """The request's sampling controls as `generate` arguments, with audiocraft's meaning.

    audiocraft samples top-p when top_p > 0 and ignores top_k then; otherwise top-k.
    transformers would read top_p=0 as "keep one token" (greedy), so top-p is switched off.
    """
    use_top_p = request.top_p > 0
    return {
        "do_sample": True,
        "top_k": 0 if use_top_p else int(request.top_k),
        "top_p": float(request.top_p) if use_top_p else 1.0,
        "temperature": float(request.temperature),
        "guidance_scale": float(request.classifier_free_guidance),
    }


def _encode_prompt(loaded: LoadedModel, samples: np.ndarray) -> Any:
    """EnCodec tokens (num_codebooks, frames) of a clip; stereo interleaves left/right rows,
    as transformers does for stereo prompts."""
    import torch

    model = loaded.model
    wav = torch.from_numpy(samples)[None].to(model.device, model.dtype)
    sides = [wav[:, :1]] if loaded.channels == 1 else [wav[:, :1], wav[:, 1:2]]
    with torch.no_grad():
        codes = [model.audio_encoder.encode(side).audio_codes[0, 0] for side in sides]
    if codes[0].shape[0] != loaded.channel_codebooks:
        raise StudioError(
            f"The checkpoint {loaded.checkpoint}'s audio codec makes {codes[0].shape[0]} "
            f"codebooks but its decoder reads {loaded.channel_codebooks}; it can't continue clips."
        )
    if loaded.channels == 1:
        return codes[0]
    stereo = torch.empty((loaded.num_codebooks, codes[0].shape[-1]), dtype=codes[0].dtype)
    stereo[::2], stereo[1::2] = codes[0], codes[1]
    return stereo.to(model.device)


def _clip_slice(request: GenerationRequest, sampling_rate: int, channels: int) -> np.ndarray:
    """The clip's continuation_start..continuation_end slice (the whole clip when neither is
    set): what a continuation continues, and what a melody take follows, as on Replicate."""
    assert request.input_audio
    end = request.continuation_end
    return read_clip(
        request.input_audio,
        sampling_rate=sampling_rate,
        channels=channels,
        start=float(request.continuation_start),
        end=None if end is None else float(end),
    )


def _continuation_slice(loaded: LoadedModel, request: GenerationRequest) -> np.ndarray:
    """The clip slice to continue, at the model's rate and channels, cut to whole frames."""
    head = _clip_slice(request, loaded.sampling_rate, loaded.channels)
    whole = head.shape[-1] // loaded.hop_length * loaded.hop_length
    if whole == 0:
        raise StudioError("The part of the clip to continue is too short (under one frame).")
    seconds = whole / loaded.sampling_rate
    if seconds >= request.duration:
        raise StudioError(
            f"The part of the clip to continue lasts {seconds:.1f} s, but the whole piece is "
            f"{request.duration} s (in continuation the duration includes the clip). Raise the "
            "duration or choose a shorter part of the clip."
        )
    return head[:, :whole]


@dataclass
class Row:
    """One take of a batch: its request, seed, scratch folder and hooks."""

    request: GenerationRequest
    seed: int
    workdir: Path
    hooks: Hooks


@dataclass
class _Conditioning:
    """What a row's clip adds: the continuation slice and its codes, or the melody's chroma."""

    head: np.ndarray | None = None
    prompt_codes: Any = None
    melody: Any = None


def _conditioning(loaded: LoadedModel, request: GenerationRequest) -> _Conditioning:
    """Read and encode the row's clip; raises StudioError for a clip this run can't use."""
    model = loaded.model
    found = _Conditioning()
    if request.input_audio and request.continuation:
        found.head = _continuation_slice(loaded, request)
        found.prompt_codes = _encode_prompt(loaded, found.head)
    if request.uses_melody and loaded.chroma is None:
        raise StudioError(
            f"The checkpoint {loaded.checkpoint} can't follow a melody. Set "
            "MUSICGEN_LOCAL_MELODY_MODEL to a melody checkpoint (e.g. facebook/musicgen-melody), "
            "or turn Continuation on to extend the clip instead."
        )
    if request.input_audio and request.uses_melody and loaded.chroma is not None:
        clip = _clip_slice(request, loaded.chroma.sampling_rate, channels=1)
        found.melody = chroma_features(clip[0], loaded.chroma).to(model.device, model.dtype)
    return found


class _Finished(Exception):
    """Every row has its tokens: leave `generate` before it decodes (each row is decoded at
    its own length here)."""

    def __init__(self, sequences: Any) -> None:
        super().__init__()
        self.sequences = sequences


@dataclass
class _Live:
    """A row while the batch runs."""

    row: Row
    steps: int  # decoding steps this row needs (the batch runs to the longest)
    total_frames: int
    condition: _Conditioning
    stream: StreamDecoder
    dropped: bool = False  # cancelled: no more progress or previews


class _StepWatcher:
    """A StoppingCriteria that never stops a row itself: every decoding step it reports each
    row's progress, feeds each row's preview, drops cancelled rows (the others go on), raises
    `Canceled` once every row is cancelled, and `_Finished` once every live row is complete.

    (transformers hands a `streamer` only the prompt, never the new tokens, so the stopping
    criteria, which see the whole sequence every step, are the per-step hook.)
    """

    def __init__(self, start_length: int, codebooks: int, rows: list[_Live]):
        self.start_length = start_length
        self.codebooks = codebooks
        self.rows = rows

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        made = input_ids.shape[-1] - self.start_length
        waiting = False
        k = self.codebooks
        for i, live in enumerate(self.rows):
            if live.dropped:
                continue
            if live.row.hooks.canceled.is_set():
                live.dropped = True
                continue
            done = min(live.steps, made)
            live.row.hooks.progress(done, live.steps)
            live.stream.step(input_ids[i * k : (i + 1) * k])
            waiting = waiting or done < live.steps
        if all(live.dropped for live in self.rows):
            raise Canceled
        if not waiting:
            raise _Finished(input_ids)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def synthesize_batch(
    loaded: LoadedModel,
    rows: list[Row],
    *,
    preview_seconds: float,
    preview_lead_seconds: float,
    clock: Callable[[], float] = time.monotonic,
) -> list[SynthResult | Exception]:
    """Make every row in one `generate` call; each row's result, or why it has none.

    Previews (`preview_seconds` of audio each) are written while the pass's end is at least
    `preview_lead_seconds` away by `clock` (`preview.StreamDecoder`).

    The rows must fit together (`batch.batch_key`): one checkpoint, one clip and its use. A
    row's own problem (a clip slice too short for its duration) or its cancel ends that row
    only; a failure of the call itself (out of memory) is raised for all.
    """
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    started = time.perf_counter()
    model = loaded.model
    device = model.device
    k = loaded.num_codebooks
    results: list[SynthResult | Exception | None] = [None] * len(rows)
    conditions: list[_Conditioning] = []
    kept: list[int] = []
    for i, row in enumerate(rows):
        try:
            conditions.append(_conditioning(loaded, row.request))
            kept.append(i)
        except StudioError as why:
            results[i] = why
    if not kept:
        return [r for r in results if r is not None]
    first = conditions[0]
    prompt_frames = 0 if first.prompt_codes is None else int(first.prompt_codes.shape[-1])
    pad = int(model.generation_config.decoder_start_token_id)
    bos = torch.full((k, 1), pad, dtype=torch.long, device=device)
    initial = bos if first.prompt_codes is None else torch.cat([bos, first.prompt_codes], dim=-1)
    frames = [round(rows[i].request.duration * loaded.frame_rate) for i in kept]
    # generate yields (steps + 1 - delay depth) whole frames: ask for exactly total_frames.
    row_steps = [n - prompt_frames + loaded.channel_codebooks - 1 for n in frames]
    steps = max(row_steps)
    live: list[_Live] = []
    for i, condition, total_frames, own_steps in zip(
        kept, conditions, frames, row_steps, strict=True
    ):
        row = rows[i]
        stream = StreamDecoder(
            loaded,
            initial_ids=initial,
            max_length=initial.shape[-1] + own_steps,
            total_frames=total_frames,
            preview_seconds=preview_seconds,
            preview_lead_seconds=preview_lead_seconds,
            workdir=row.workdir,
            emit=row.hooks.preview,
            head=condition.head,
            # Every row's take is done when the pass is, at the longest row's length. Each
            # row's decoder times the same steps of the pass, so the pace needs no sharing.
            end_length=initial.shape[-1] + steps,
            clock=clock,
        )
        live.append(_Live(row, own_steps, total_frames, condition, stream))
    settings = [RowSettings.of(r.row.request, r.row.seed) for r in live]
    text = loaded.tokenizer(
        [r.row.request.prompt or "" for r in live], padding=True, return_tensors="pt"
    ).to(device)
    extra: dict[str, Any] = {}
    if first.prompt_codes is not None:
        extra["decoder_input_ids"] = first.prompt_codes.repeat(len(live), 1)
    if first.melody is not None:
        extra["input_features"] = first.melody.repeat(len(live), 1, 1)
    watcher = _StepWatcher(initial.shape[-1], k, live)
    sequences = None
    try:
        with torch.inference_mode():
            model.generate(
                **text,
                **extra,
                **generate_kwargs(settings),
                max_new_tokens=steps,
                logits_processor=LogitsProcessorList([RowSampler(settings, k, device)]),
                stopping_criteria=StoppingCriteriaList([watcher]),
            )
    except _Finished as done:
        sequences = done.sequences
    except Canceled:
        sequences = None
    except torch.cuda.OutOfMemoryError:  # (torch.OutOfMemoryError only exists from 2.5)
        raise StudioError(_oom(loaded, rows[kept[0]].request, len(live))) from None
    except RuntimeError as why:
        if "out of memory" in str(why).lower():
            raise StudioError(_oom(loaded, rows[kept[0]].request, len(live))) from None
        raise
    spent = time.perf_counter() - started
    for j, (i, r) in enumerate(zip(kept, live, strict=True)):
        if sequences is None or r.dropped or r.row.hooks.canceled.is_set():
            results[i] = Canceled()
            continue
        request = r.row.request
        with torch.inference_mode():
            samples = r.stream.finish(sequences[j * k : (j + 1) * k])
        samples = samples[:, : round(request.duration * loaded.sampling_rate)]
        samples = normalize(samples, request.normalization_strategy, loaded.sampling_rate)
        results[i] = SynthResult(samples, loaded.sampling_rate, spent)
    return [r if r is not None else Canceled() for r in results]


def synthesize(
    loaded: LoadedModel,
    request: GenerationRequest,
    *,
    seed: int,
    workdir: Path,
    hooks: Hooks,
    preview_seconds: float,
    preview_lead_seconds: float,
    clock: Callable[[], float] = time.monotonic,
) -> SynthResult:
    """Generate `request` with `seed` alone (a batch of one); raises `Canceled` or `StudioError`."""
    (result,) = synthesize_batch(
        loaded,
        [Row(request, seed, workdir, hooks)],
        preview_seconds=preview_seconds,
        preview_lead_seconds=preview_lead_seconds,
        clock=clock,
    )
    if isinstance(result, Exception):
        raise result
    return result


def _oom(loaded: LoadedModel, request: GenerationRequest, takes: int = 1) -> str:
    together = f" ({takes} takes at once)" if takes > 1 else ""
    return (
        f"This machine's {loaded.device.name} ran out of memory making {request.duration} s "
        f"with {loaded.checkpoint}{together}. Try a shorter duration or a smaller model."
    )
