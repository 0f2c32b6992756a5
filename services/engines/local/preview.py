"""Streamed decoding: the take's audio made piece by piece while its tokens grow, each piece
final the moment it is written, so every previewed sample is the final take's sample.

MusicGen writes its codebooks with a delay (codebook k runs k steps behind codebook 0), so a
frame is complete only once the last codebook has caught up: each step the partial sequence is
put through the model's own delay mask and its padding dropped, as `generate` does at the end.

EnCodec's decoder is not causal: a convolution (7 frames wide), then an LSTM (causal, but its
state carries the whole past), then upsampling convolutions. `StreamDecoder` runs it in three
stages that each keep what they need: the first convolution sees a few frames either side of
its output, the LSTM continues from the state where the last piece stopped, and the upsampling
stage sees a few frames of LSTM output either side. A piece holds back the last frames whose
samples still depend on frames not generated yet (`HOLD_FRAMES`), so nothing written ever
changes; the take's final audio is the pieces joined, plus the rest decoded at the end. The
decoding work is the take's own decoding, split (a few frames of overlap per piece), not a
second decode beside it. Pieces come in fixed sizes, so the codec's kernels see few shapes.

A preview is only worth its cost (the decode here, the page's audio stream and updates) if it
can be heard before the final take replaces it. When a piece is due, the time left is estimated
from the seconds per decoding step measured so far; a take that will be done within
`preview_lead_seconds` writes no more pieces, and `finish` decodes the rest in one go.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from services.engines.local.audio_io import write_audio
from services.engines.local.loader import LoadedModel

# The first preview is this short, so the first sound comes early; the next ones hold
# `preview_seconds` of new audio each.
FIRST_PREVIEW_SECONDS = 0.25
# Frames of LSTM output decoded again before each piece, and held back after it: the upsampling
# stage's reach (its transposed convolutions reach into the next frame, less than a whole one;
# measured on the 32 kHz EnCodec's shape: 0 differs from a one-piece decode, 1 matches it).
POST_FRAMES = 1
# Decoding steps timed before their pace is trusted to estimate the time left.
TIMED_STEPS = 2
# The join between a continued clip and the new audio is crossfaded over this.
JOIN_SECONDS = 0.02


def join_head(head: np.ndarray, audio: np.ndarray, offset: int, sampling_rate: int) -> np.ndarray:
    """`audio` (samples from `offset` on) with the continued clip `head` in place of the start,
    crossfaded into the generated audio at the join.

    The model's tokens of the slice decode to an approximation of it; the musician's own audio
    is kept instead, and the short fade hides the step between the two.
    """
    n = head.shape[-1]
    if offset >= n:
        return audio
    out = audio.copy()
    fade = min(n, round(JOIN_SECONDS * sampling_rate))
    pos = np.arange(offset, offset + audio.shape[-1])
    kept = pos < n - fade
    out[:, kept] = head[:, pos[kept]]
    blend = (pos >= n - fade) & (pos < n)
    if blend.any():
        ramp = ((pos[blend] - (n - fade)) / fade).astype(np.float32)
        out[:, blend] = head[:, pos[blend]] * (1 - ramp) + audio[:, blend] * ramp
    return out


class _ChannelStream:
    """One channel's decoder state: the LSTM's state and the LSTM output not yet upsampled."""

    def __init__(self, codec: Any) -> None:
        self.codec = codec
        layers = list(codec.decoder.layers)
        self.first = layers[0]
        self.lstm = layers[1]
        self.rest = layers[2:]
        total = int(self.first.padding_total)
        self.pre_left, self.pre_right = total - total // 2, total // 2
        self.state: Any = None
        self.fed = 0  # frames through the LSTM
        self.buffer: Any = None  # LSTM output from frame `buffer_start` to `fed`
        self.buffer_start = 0
        self.sent = 0  # frames upsampled and handed out

    @property
    def hold(self) -> int:
        return self.pre_right + POST_FRAMES

    def advance(self, codes: Any, *, final: bool) -> Any:
        """Audio (1, n) of the frames that `codes` (codebooks, frames so far) now fix for good;
        `final`: `codes` is the whole take, decode to its end."""
        import torch

        available = codes.shape[-1]
        lstm_end = available if final else available - self.pre_right
        if lstm_end > self.fed:
            start = max(0, self.fed - self.pre_left)
            stop = available if final else min(available, lstm_end + self.pre_right)
            embeddings = self.codec.quantizer.decode(codes[None, :, start:stop].transpose(0, 1))
            first = self.first(embeddings)[..., self.fed - start : lstm_end - start]
            x = first.permute(2, 0, 1)
            out, self.state = self.lstm.lstm(x, self.state)
            new = (out + x).permute(1, 2, 0)  # EncodecLSTM's skip connection
            self.buffer = new if self.buffer is None else torch.cat([self.buffer, new], dim=-1)
            self.fed = lstm_end
        end = self.fed if final else self.fed - POST_FRAMES
        if end <= self.sent:
            return None
        start = max(self.buffer_start, self.sent - POST_FRAMES)
        hidden = self.buffer[..., start - self.buffer_start :]
        for layer in self.rest:
            hidden = layer(hidden)
        hop = hidden.shape[-1] // (self.fed - start)
        audio = hidden[0, :, (self.sent - start) * hop : (end - start) * hop]
        self.sent = end
        keep = max(0, end - POST_FRAMES) - self.buffer_start
        self.buffer, self.buffer_start = self.buffer[..., keep:], self.buffer_start + keep
        return audio


class StreamDecoder:
    """One take's audio, decoded as its tokens grow; previews written on the way.

    `head` is the continued clip, which replaces the start of the audio. `preview_seconds` 0
    writes no previews (the audio is then decoded in one piece at the end). A piece is written
    only while the take's end is at least `preview_lead_seconds` away (0: always): the steps
    still to run, up to the sequence length `end_length` at which the take is done (a batch runs
    to its longest row; default `max_length`), at the seconds per step `clock` has measured
    since the first `step`.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        initial_ids: Any,
        max_length: int,
        total_frames: int,
        preview_seconds: float,
        preview_lead_seconds: float,
        workdir: Path,
        emit: Callable[[Path], None],
        head: np.ndarray | None = None,
        end_length: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loaded = loaded
        self.pad = int(loaded.model.generation_config.decoder_start_token_id)
        _, self.mask = loaded.model.decoder.build_delay_pattern_mask(
            initial_ids, pad_token_id=self.pad, max_length=max_length
        )
        self.total_frames = total_frames
        codec = loaded.model.audio_encoder
        self.channels = [_ChannelStream(codec) for _ in range(loaded.channels)]
        self.previews = preview_seconds > 0
        self.first = max(1, round(min(FIRST_PREVIEW_SECONDS, preview_seconds) * loaded.frame_rate))
        self.every = max(1, round(preview_seconds * loaded.frame_rate))
        self.lead = preview_lead_seconds
        self.end_length = max_length if end_length is None else end_length
        self.clock = clock
        self.timed_from: tuple[float, int] | None = None  # (clock, length) at the first step
        self.workdir = workdir
        self.emit = emit
        self.head = head
        self.pieces: list[np.ndarray] = []
        self.done = 0  # samples decoded so far
        self.count = 0

    def complete_frames(self, length: int) -> int:
        """Frames every codebook has reached in a sequence of `length` (BOS included)."""
        return max(0, min(self.total_frames, length - self.loaded.channel_codebooks))

    def codes(self, sequence: Any, frames: int) -> Any:
        """The first `frames` frames of `sequence` (codebooks, length), undelayed."""
        import torch

        # A shorter take of a batch stops at its own length (the batch runs to the longest).
        sequence = sequence[..., : self.mask.shape[-1]]
        ids = self.loaded.model.decoder.apply_delay_pattern_mask(sequence, self.mask)
        rows = [row[row != self.pad][:frames] for row in ids]
        return torch.stack(rows)

    def step(self, sequence: Any) -> None:
        """Called after every decoding step with this take's whole sequence so far."""
        if not self.previews:
            return
        length = sequence.shape[-1]
        if self.timed_from is None:
            self.timed_from = (self.clock(), length)
        frames = self.complete_frames(length)
        sent = self.channels[0].sent
        due = self.first if sent == 0 else self.every
        if frames - self.channels[0].hold - sent >= due and frames < self.total_frames:
            if not self._heard_in_time(length):
                return
            audio = self._advance(self.codes(sequence, frames), final=False)
            if audio is not None:
                self._write(audio)

    def _heard_in_time(self, length: int) -> bool:
        """Whether a piece written now plays before the final take replaces it: the steps still
        to run, at the seconds per step measured so far, take at least `lead` seconds.

        Too few steps timed: not yet (the piece stays due and is judged at the next step). Too
        late: the take writes no more previews (the time left shrinks with every step unless the
        pace changes, and a piece written later would carry the skipped audio too, at once).
        """
        if self.lead <= 0:
            return True
        assert self.timed_from is not None
        since, first_length = self.timed_from
        timed = length - first_length
        if timed < TIMED_STEPS:
            return False
        left = (self.end_length - length) * (self.clock() - since) / timed
        if left < self.lead:
            self.previews = False
            return False
        return True

    def finish(self, sequence: Any) -> np.ndarray:
        """The take's audio (channels, samples): the pieces so far and the rest, joined."""
        rest = self._advance(self.codes(sequence, self.total_frames), final=True)
        if rest is not None:
            self.pieces.append(rest)
        return np.concatenate(self.pieces, axis=-1)

    def _advance(self, codes: Any, *, final: bool) -> np.ndarray | None:
        import torch

        with torch.inference_mode():
            if len(self.channels) == 1:
                parts = [self.channels[0].advance(codes, final=final)]
            else:  # stereo: the rows interleave left and right codebooks
                parts = [
                    stream.advance(codes[side::2], final=final)
                    for side, stream in enumerate(self.channels)
                ]
        if parts[0] is None:
            return None
        audio: np.ndarray = torch.cat(parts, dim=0).float().cpu().numpy()
        if self.head is not None:
            audio = join_head(self.head, audio, self.done, self.loaded.sampling_rate)
        self.done += audio.shape[-1]
        return audio

    def _write(self, audio: np.ndarray) -> None:
        self.pieces.append(audio)
        self.count += 1
        path = self.workdir / f"preview-{self.count:04d}.wav"
        write_audio(audio, path, sampling_rate=self.loaded.sampling_rate, fmt="wav")
        self.emit(path)


def decode_frames(loaded: LoadedModel, codes: Any) -> np.ndarray:
    """Audio (channels, frames * hop) of codes (num_codebooks, frames) in one piece."""
    import torch

    codec = loaded.model.audio_encoder
    with torch.inference_mode():
        if loaded.channels == 1:
            audio = codec.decode(codes[None, None], audio_scales=[None]).audio_values[0]
        else:
            left = codec.decode(codes[None, None, ::2], audio_scales=[None]).audio_values[0]
            right = codec.decode(codes[None, None, 1::2], audio_scales=[None]).audio_values[0]
            audio = torch.cat([left, right], dim=0)
    result: np.ndarray = audio.float().cpu().numpy()
    return result
