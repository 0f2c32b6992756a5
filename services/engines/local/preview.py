"""Streamed previews: the audio of the tokens generated so far, decoded in chunks while it grows.

MusicGen writes its codebooks with a delay (codebook k runs k steps behind codebook 0), so a
frame is complete only once the last codebook has caught up. Each step the partial sequence is
put through the model's own delay mask (`apply_delay_pattern_mask`), the padding the mask puts
in is dropped (as `generate` does at the end), and only frames all codebooks have reached are
decoded. Each chunk is decoded with a little already-sent audio before it as context (the codec's
convolutions and LSTM need some), and only the new part is written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from services.engines.local.audio_io import write_audio
from services.engines.local.loader import LoadedModel

# Already-sent audio decoded again before each chunk, so the chunk starts as it would in a
# full decode. Half a second keeps decoding cost a few percent of generation on a CPU.
CONTEXT_SECONDS = 0.5


def decode_frames(loaded: LoadedModel, codes: Any) -> np.ndarray:
    """Audio (channels, frames * hop) of codes (num_codebooks, frames); stereo rows interleave."""
    import torch

    codec = loaded.model.audio_encoder
    with torch.no_grad():
        if loaded.channels == 1:
            audio = codec.decode(codes[None, None], audio_scales=[None]).audio_values[0]
        else:
            left = codec.decode(codes[None, None, ::2], audio_scales=[None]).audio_values[0]
            right = codec.decode(codes[None, None, 1::2], audio_scales=[None]).audio_values[0]
            audio = torch.cat([left, right], dim=0)
    result: np.ndarray = audio.float().cpu().numpy()
    return result


class PreviewDecoder:
    """Turns the growing token matrix into preview files of about `every_frames` frames each.

    `head` is audio that replaces the start of the output (the original continuation slice).
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        initial_ids: Any,
        max_length: int,
        total_frames: int,
        every_frames: int,
        workdir: Path,
        emit: Callable[[Path], None],
        head: np.ndarray | None = None,
    ) -> None:
        self.loaded = loaded
        self.pad = int(loaded.model.generation_config.decoder_start_token_id)
        _, self.mask = loaded.model.decoder.build_delay_pattern_mask(
            initial_ids, pad_token_id=self.pad, max_length=max_length
        )
        self.total_frames = total_frames
        self.every = max(1, every_frames)
        self.context = round(CONTEXT_SECONDS * loaded.frame_rate)
        self.workdir = workdir
        self.emit = emit
        self.head = head
        self.sent_frames = 0
        self.count = 0

    def complete_frames(self, length: int) -> int:
        """Frames every codebook has reached in a sequence of `length` (BOS included)."""
        return max(0, min(self.total_frames, length - self.loaded.channel_codebooks))

    def step(self, sequence: Any) -> None:
        """Called after every decoding step with the whole sequence so far."""
        frames = self.complete_frames(sequence.shape[-1])
        if frames - self.sent_frames >= self.every:
            self._send(sequence, frames)

    def codes(self, sequence: Any, frames: int) -> Any:
        """The first `frames` frames of `sequence`, undelayed: (num_codebooks, frames)."""
        import torch

        ids = self.loaded.model.decoder.apply_delay_pattern_mask(sequence, self.mask)
        rows = [row[row != self.pad][:frames] for row in ids]
        return torch.stack(rows)

    def _send(self, sequence: Any, frames: int) -> None:
        start = max(0, self.sent_frames - self.context)
        codes = self.codes(sequence, frames)[:, start:frames]
        audio = decode_frames(self.loaded, codes)
        hop = self.loaded.hop_length
        first = self.sent_frames * hop
        audio = audio[:, first - start * hop :]
        if self.head is not None and first < self.head.shape[-1]:
            overlap = min(self.head.shape[-1], frames * hop) - first
            audio[:, :overlap] = self.head[:, first : first + overlap]
        self.count += 1
        path = self.workdir / f"preview-{self.count:04d}.wav"
        write_audio(audio, path, sampling_rate=self.loaded.sampling_rate, fmt="wav")
        self.sent_frames = frames
        self.emit(path)
