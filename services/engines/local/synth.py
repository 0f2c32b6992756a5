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
from services.engines.local.guidance import guidance_kwargs
from services.engines.local.loader import LoadedModel
from services.engines.local.normalize import normalize
from services.engines.local.preview import PreviewDecoder
from services.errors import StudioError
from services.musicgen import GenerationRequest

# The join between the original continuation slice and the new audio is crossfaded over this.
JOIN_SECONDS = 0.02


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
    Guidance 0 and 1 mean the unconditional and the conditional model (engines.local.guidance).
    """
    use_top_p = request.top_p > 0
    return {
        "do_sample": True,
        "top_k": 0 if use_top_p else int(request.top_k),
        "top_p": float(request.top_p) if use_top_p else 1.0,
        "temperature": float(request.temperature),
        **guidance_kwargs([float(request.classifier_free_guidance)]),
    }


class _StepWatcher:
    """A StoppingCriteria that never stops generation itself: it reports every decoding step,
    feeds the preview decoder and raises `Canceled` within one step of a cancel.

    (This transformers release hands a `streamer` only the prompt, never the new tokens, so
    the stopping criteria, which see the whole sequence every step, are the per-step hook.)
    """

    def __init__(self, start_length: int, total: int, hooks: Hooks, preview: PreviewDecoder | None):
        self.start_length = start_length
        self.total = total
        self.hooks = hooks
        self.preview = preview

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        if self.hooks.canceled.is_set():
            raise Canceled
        self.hooks.progress(min(self.total, input_ids.shape[-1] - self.start_length), self.total)
        if self.preview is not None:
            self.preview.step(input_ids)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


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


def _join(head: np.ndarray, generated: np.ndarray, sampling_rate: int) -> np.ndarray:
    """The original slice, then the generated audio from where it ends, crossfaded at the join.

    The model's tokens of the slice decode to an approximation of it; the musician's own audio
    is kept instead, and the short fade hides the step between the two.
    """
    n = head.shape[-1]
    out = generated.copy()
    fade = min(n, round(JOIN_SECONDS * sampling_rate))
    out[:, : n - fade] = head[:, : n - fade]
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        out[:, n - fade : n] = head[:, n - fade :] * (1 - ramp) + generated[:, n - fade : n] * ramp
    return out


def synthesize(
    loaded: LoadedModel,
    request: GenerationRequest,
    *,
    seed: int,
    workdir: Path,
    hooks: Hooks,
    preview_seconds: float,
) -> SynthResult:
    """Generate `request` with `seed`; raises `Canceled` or `StudioError`."""
    import torch
    from transformers import StoppingCriteriaList

    started = time.perf_counter()
    model = loaded.model
    device = model.device
    total_frames = round(request.duration * loaded.frame_rate)

    head: np.ndarray | None = None
    prompt_codes = None
    if request.input_audio and request.continuation:
        head = _continuation_slice(loaded, request)
        prompt_codes = _encode_prompt(loaded, head)
    melody = None
    if request.uses_melody and loaded.chroma is None:
        raise StudioError(
            f"The checkpoint {loaded.checkpoint} can't follow a melody. Set "
            "MUSICGEN_LOCAL_MELODY_MODEL to a melody checkpoint (e.g. facebook/musicgen-melody), "
            "or turn Continuation on to extend the clip instead."
        )
    if request.input_audio and request.uses_melody and loaded.chroma is not None:
        clip = _clip_slice(request, loaded.chroma.sampling_rate, channels=1)
        melody = chroma_features(clip[0], loaded.chroma).to(device, model.dtype)

    text = loaded.tokenizer([request.prompt or ""], padding=True, return_tensors="pt").to(device)
    prompt_frames = 0 if prompt_codes is None else int(prompt_codes.shape[-1])
    # generate yields (steps + 1 - delay depth) whole frames: ask for exactly total_frames.
    steps = total_frames - prompt_frames + loaded.channel_codebooks - 1
    pad = int(model.generation_config.decoder_start_token_id)
    bos = torch.full((loaded.num_codebooks, 1), pad, dtype=torch.long, device=device)
    initial = bos if prompt_codes is None else torch.cat([bos, prompt_codes], dim=-1)

    previewer = None
    every = round(preview_seconds * loaded.frame_rate)
    if every > 0:
        previewer = PreviewDecoder(
            loaded,
            initial_ids=initial,
            max_length=initial.shape[-1] + steps,
            total_frames=total_frames,
            every_frames=every,
            workdir=workdir,
            emit=hooks.preview,
            head=head,
        )
    watcher = _StepWatcher(initial.shape[-1], steps, hooks, previewer)
    extra: dict[str, Any] = {}
    if prompt_codes is not None:
        extra["decoder_input_ids"] = prompt_codes
    if melody is not None:
        extra["input_features"] = melody

    torch.manual_seed(seed)
    try:
        with torch.inference_mode():
            audio = model.generate(
                **text,
                **extra,
                **sampling_kwargs(request),
                max_new_tokens=steps,
                stopping_criteria=StoppingCriteriaList([watcher]),
            )
    except torch.cuda.OutOfMemoryError:  # (torch.OutOfMemoryError only exists from 2.5)
        raise StudioError(_oom(loaded, request)) from None
    except RuntimeError as why:
        if "out of memory" in str(why).lower():
            raise StudioError(_oom(loaded, request)) from None
        raise
    samples: np.ndarray = audio[0].float().cpu().numpy()
    samples = samples[:, : round(request.duration * loaded.sampling_rate)]
    if head is not None:
        samples = _join(head, samples, loaded.sampling_rate)
    samples = normalize(samples, request.normalization_strategy, loaded.sampling_rate)
    return SynthResult(samples, loaded.sampling_rate, time.perf_counter() - started)


def _oom(loaded: LoadedModel, request: GenerationRequest) -> str:
    return (
        f"This machine's {loaded.device.name} ran out of memory making {request.duration} s "
        f"with {loaded.checkpoint}. Try a shorter duration or a smaller model."
    )
