"""Chroma features of a melody clip, as MusicgenMelodyFeatureExtractor computes them.

transformers' feature extractor needs torchaudio only for its spectrogram and resampler, and
torchaudio has no build for every torch release; this is the same computation with torch.stft
(resampling happens earlier, when the clip is read). Only the argmax of each frame survives, so
the spectrogram's scale doesn't matter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from services.engines.local.loader import ChromaSettings


def chroma_features(mono: np.ndarray, settings: ChromaSettings) -> Any:
    """One-hot chroma (1, frames, num_chroma) of a mono float clip at `settings.sampling_rate`."""
    import torch
    from transformers.audio_utils import chroma_filter_bank

    wav = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
    wav = wav[: settings.chunk_length * settings.sampling_rate]
    if wav.shape[-1] < settings.n_fft:  # centre short clips in silence, like the extractor
        pad = settings.n_fft - wav.shape[-1]
        wav = torch.nn.functional.pad(wav, (pad // 2, pad - pad // 2))
    window = torch.hann_window(settings.n_fft)
    spec = (
        torch.stft(
            wav,
            n_fft=settings.n_fft,
            hop_length=settings.hop_length,
            win_length=settings.n_fft,
            window=window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        ).abs()
        ** 2
    )
    filters = torch.from_numpy(
        chroma_filter_bank(
            sampling_rate=settings.sampling_rate,
            num_frequency_bins=settings.n_fft,
            tuning=0,
            num_chroma=settings.num_chroma,
        )
    ).float()
    raw = torch.einsum("cf,ft->ct", filters, spec)
    norm = torch.nn.functional.normalize(raw, p=float("inf"), dim=0, eps=1e-6).T
    onehot = torch.zeros_like(norm)
    onehot.scatter_(-1, norm.argmax(-1, keepdim=True), 1.0)
    return onehot[None]
