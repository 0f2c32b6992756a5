"""Loading a checkpoint into memory: the model, its tokenizer and the numbers the engine needs."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.engines.local.checkpoints import Device
from services.engines.local.download import fetch
from services.engines.local.precision import apply_precision, load_dtype
from services.errors import StudioError

MELODY_TYPE = "musicgen_melody"
TEXT_TYPE = "musicgen"


@dataclass(frozen=True)
class ChromaSettings:
    """How a melody checkpoint turns a clip into chroma (its preprocessor config)."""

    sampling_rate: int
    n_fft: int
    hop_length: int
    num_chroma: int
    chunk_length: int  # seconds of melody it looks at


@dataclass(frozen=True)
class LoadedModel:
    """A checkpoint ready to generate; shared by every run (read-only once loaded)."""

    checkpoint: str
    model: Any  # MusicgenForConditionalGeneration | MusicgenMelodyForConditionalGeneration
    tokenizer: Any
    device: Device  # with the precision it runs at
    is_melody: bool
    sampling_rate: int
    frame_rate: int  # codec frames (decoding steps) per second of audio
    hop_length: int  # samples per frame
    channels: int
    num_codebooks: int  # rows of the token matrix (both channels' codebooks on stereo)
    chroma: ChromaSettings | None

    @property
    def channel_codebooks(self) -> int:
        """Codebooks per channel: the delay pattern's depth."""
        return self.num_codebooks // self.channels

    @property
    def max_seconds(self) -> float:
        """The longest audio one pass can make (positions the decoder was trained on)."""
        positions = int(self.model.config.decoder.max_position_embeddings)
        return (positions - self.channel_codebooks) / self.frame_rate


def _chroma_settings(folder: Path) -> ChromaSettings:
    path = folder / "preprocessor_config.json"
    raw: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    # Defaults are MusicgenMelodyFeatureExtractor's own.
    return ChromaSettings(
        sampling_rate=int(raw.get("sampling_rate", 32000)),
        n_fft=int(raw.get("n_fft", 16384)),
        hop_length=int(raw.get("hop_length", 4096)),
        num_chroma=int(raw.get("num_chroma", 12)),
        chunk_length=int(raw.get("chunk_length", 30)),
    )


def load(
    checkpoint: str,
    device: Device,
    log: Callable[[str], None],
    *,
    setting: str = "MUSICGEN_LOCAL_MODEL",
) -> LoadedModel:
    """Fetch (if needed) and load `checkpoint` onto `device`; blocking, for a worker thread.

    `setting` is the variable that named the checkpoint, for the errors to point at.
    """
    folder = fetch(checkpoint, log, setting=setting)
    log(f"Loading model {checkpoint} ({device.precision} on {device.name})...")
    try:
        return _load_folder(checkpoint, folder, device)
    except StudioError:
        raise
    except (OSError, ValueError, KeyError) as why:
        raise StudioError(
            f"The checkpoint {checkpoint} could not be loaded: it is not a MusicGen checkpoint "
            f"this version of transformers can read ({type(why).__name__})."
        ) from None
    except (RuntimeError, AssertionError) as why:
        if "out of memory" in str(why).lower():
            raise StudioError(
                f"The checkpoint {checkpoint} does not fit in the memory of this machine's "
                f"{device.name}. Choose a smaller model (e.g. facebook/musicgen-small)."
            ) from None
        if device.name != "cpu" and ("cuda" in str(why).lower() or "mps" in str(why).lower()):
            raise StudioError(
                f"The {device.name} device could not be used ({why}). "
                "Unset MUSICGEN_DEVICE or set it to cpu."
            ) from None
        raise


def check_tokenizer_files(checkpoint: str, folder: Path, has_sentencepiece: bool) -> None:
    """A checkpoint whose tokenizer is only a SentencePiece model (`spiece.model`, no
    `tokenizer.json`) can only be read with the sentencepiece package: say so plainly."""
    if has_sentencepiece or (folder / "tokenizer.json").is_file():
        return
    if (folder / "spiece.model").is_file():
        raise StudioError(
            f"The checkpoint {checkpoint} ships its text tokenizer only as spiece.model, which "
            "needs the sentencepiece package: pip install -r requirements-local.txt (or pip "
            "install sentencepiece) and restart the app."
        )


def _load_folder(checkpoint: str, folder: Path, device: Device) -> LoadedModel:
    from transformers import (
        AutoConfig,
        AutoTokenizer,
        MusicgenForConditionalGeneration,
        MusicgenMelodyForConditionalGeneration,
    )

    config = AutoConfig.from_pretrained(folder)
    if config.model_type not in (TEXT_TYPE, MELODY_TYPE):
        raise StudioError(
            f"The checkpoint {checkpoint} is a “{config.model_type}” model, not MusicGen."
        )
    is_melody = config.model_type == MELODY_TYPE
    cls: Any = (
        MusicgenMelodyForConditionalGeneration if is_melody else MusicgenForConditionalGeneration
    )
    check_tokenizer_files(checkpoint, folder, importlib.util.find_spec("sentencepiece") is not None)
    model = cls.from_pretrained(folder, dtype=load_dtype(device.precision)).to(device.name)
    model.eval()
    apply_precision(model, device.precision)
    # The tokenizer alone: the melody processor needs torchaudio just for its chroma, which the
    # engine computes itself (engines.local.chroma), and audio prompts are encoded directly.
    tokenizer = AutoTokenizer.from_pretrained(folder)
    codec = config.audio_encoder
    decoder = config.decoder
    return LoadedModel(
        checkpoint=checkpoint,
        model=model,
        tokenizer=tokenizer,
        device=device,
        is_melody=is_melody,
        sampling_rate=int(codec.sampling_rate),
        frame_rate=int(codec.frame_rate),
        hop_length=int(codec.hop_length),
        channels=int(decoder.audio_channels),
        num_codebooks=int(decoder.num_codebooks),
        chroma=_chroma_settings(folder) if is_melody else None,
    )
