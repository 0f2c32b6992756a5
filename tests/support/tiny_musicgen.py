"""Tiny random-weight MusicGen checkpoints, saved like the real ones, for tests and benchmarks.

`build_checkpoint(folder, kind)` writes a folder that `from_pretrained` and the local engine load
exactly as they load `facebook/musicgen-small` or `facebook/musicgen-melody`: model weights,
config, generation config, a T5 tokenizer and the preprocessor config. The audio side keeps the
real shape of things (32 kHz, a 640-sample hop, so 50 frames a second, EnCodec bandwidth that
yields exactly the decoder's codebooks); everything else is as small as it can be, so a second
of audio takes a fraction of a second on two CPU cores. `size="small"` gives musicgen-small's
real dimensions (24 layers, hidden 1024, T5-base) for the benchmark.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import (
    EncodecConfig,
    EncodecFeatureExtractor,
    GenerationConfig,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    MusicgenMelodyConfig,
    MusicgenMelodyDecoderConfig,
    MusicgenMelodyForConditionalGeneration,
    MusicgenProcessor,
    T5Config,
    T5Tokenizer,
)

Kind = Literal["text", "melody", "stereo"]
Size = Literal["tiny", "small"]

SAMPLING_RATE = 32_000
HOP = (8, 5, 4, 4)  # 640 samples: 50 frames a second, like the real 32 kHz EnCodec
ATTENTION_GAIN = 30.0
LOGIT_GAIN = 20.0
WORDS = ("rock", "jazz", "piano", "drums", "calm", "fast", "guitar", "lofi", "beat", "synth")


def _tokenizer() -> T5Tokenizer:
    """A T5 (Unigram) tokenizer over a handful of words, built without any download."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(f"▁{w}", -1.0 - i / 10) for i, w in enumerate(WORDS)]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz▁"]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def _text_config(size: Size, vocab_size: int) -> T5Config:
    if size == "small":  # t5-base, as in musicgen-small
        return T5Config(
            vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12
        )
    return T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)


def _audio_config(size: Size, codebooks: int) -> EncodecConfig:
    codebook_size = 2048 if size == "small" else 64
    # The bandwidth decides how many codebooks EnCodec uses: make it exactly the decoder's.
    nbits = (codebook_size - 1).bit_length()
    bandwidth = codebooks * nbits * 50 / 1000
    common = {
        "sampling_rate": SAMPLING_RATE,
        "upsampling_ratios": list(HOP),
        "target_bandwidths": [bandwidth],
        "codebook_size": codebook_size,
        "chunk_length_s": None,
        "normalize": False,
        "use_causal_conv": False,
    }
    if size == "small":  # the 32 kHz EnCodec of the real checkpoints
        return EncodecConfig(
            **common, hidden_size=128, num_filters=64, num_lstm_layers=2, codebook_dim=128
        )
    return EncodecConfig(
        **common, hidden_size=16, num_filters=4, num_lstm_layers=1, codebook_dim=16
    )


def _decoder_kwargs(size: Size, codebooks: int, channels: int) -> dict[str, int]:
    vocab = 2048 if size == "small" else 64
    dims = (
        {"num_hidden_layers": 24, "hidden_size": 1024, "num_attention_heads": 16, "ffn_dim": 4096}
        if size == "small"
        else {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "ffn_dim": 64}
    )
    return {
        **dims,
        "vocab_size": vocab,
        "pad_token_id": vocab,
        "bos_token_id": vocab,
        "num_codebooks": codebooks,
        "audio_channels": channels,
        "max_position_embeddings": 2048,
    }


def build_checkpoint(
    folder: Path, kind: Kind = "text", *, size: Size = "tiny", seed: int = 0
) -> Path:
    """Write a random-weight checkpoint of `kind` into `folder` and return the folder."""
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    channels = 2 if kind == "stereo" else 1
    codebooks = 4 * channels
    text = _text_config(size, len(tokenizer))
    audio = _audio_config(size, 4)
    decoder_kwargs = _decoder_kwargs(size, codebooks, channels)
    model: MusicgenForConditionalGeneration | MusicgenMelodyForConditionalGeneration
    if kind == "melody":
        melody_config = MusicgenMelodyConfig(
            text_encoder=text,
            audio_encoder=audio,
            decoder=MusicgenMelodyDecoderConfig(**decoder_kwargs),
        )
        model = MusicgenMelodyForConditionalGeneration(melody_config)
    else:
        config = MusicgenConfig(
            text_encoder=text, audio_encoder=audio, decoder=MusicgenDecoderConfig(**decoder_kwargs)
        )
        model = MusicgenForConditionalGeneration(config)
    with torch.no_grad():
        # A fresh EnCodec's codebooks are all zeros: every token would decode to the same sound.
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_(0.0, 1.0)
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
        # At the default init (std 0.02) the decoder's logits are nearly flat and attention adds
        # almost nothing to the residual, so text and melody would barely change a sampled
        # token. Scaled up, like trained weights, the conditioning is heard.
        for name, weight in model.decoder.named_parameters():
            if name.endswith("out_proj.weight"):
                weight.mul_(ATTENTION_GAIN)
            elif name.startswith("lm_heads"):
                weight.mul_(LOGIT_GAIN)
    pad = decoder_kwargs["pad_token_id"]
    model.generation_config = GenerationConfig(
        decoder_start_token_id=pad,
        pad_token_id=pad,
        bos_token_id=pad,
        do_sample=True,
        guidance_scale=3.0,
        max_length=1500,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if kind == "melody":
        # The melody feature extractor needs torchaudio to be built, so write its config by hand
        # (the values of facebook/musicgen-melody); the engine computes the chroma itself.
        (folder / "preprocessor_config.json").write_text(
            json.dumps(
                {
                    "feature_extractor_type": "MusicgenMelodyFeatureExtractor",
                    "processor_class": "MusicgenMelodyProcessor",
                    "feature_size": 12,
                    "sampling_rate": SAMPLING_RATE,
                    "hop_length": 4096,
                    "chunk_length": 30,
                    "n_fft": 16384,
                    "num_chroma": 12,
                    "padding_side": "left",
                    "padding_value": 0.0,
                    "return_attention_mask": False,
                    "stem_indices": [3, 2],
                },
                indent=2,
            )
        )
    else:
        extractor = EncodecFeatureExtractor(
            feature_size=channels, sampling_rate=SAMPLING_RATE, padding_value=0.0
        )
        MusicgenProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@dataclass(frozen=True)
class TinyCheckpoints:
    """Folders of the three tiny checkpoints (each loadable like a Hub id)."""

    text: Path  # musicgen: text and continuation, mono
    melody: Path  # musicgen_melody: follows a melody clip's chroma
    stereo: Path  # musicgen, two channels (8 interleaved codebooks)


def build_all(root: Path) -> TinyCheckpoints:
    """Build the text, melody and stereo tiny checkpoints under `root` (about 3 s)."""
    return TinyCheckpoints(
        text=build_checkpoint(root / "tiny-musicgen", "text"),
        melody=build_checkpoint(root / "tiny-musicgen-melody", "melody", seed=1),
        stereo=build_checkpoint(root / "tiny-musicgen-stereo", "stereo", seed=2),
    )
