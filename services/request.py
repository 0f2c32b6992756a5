"""The generation request: every input of meta/musicgen, with the model's own defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

MODEL_VERSIONS: dict[str, str] = {
    "stereo-melody-large": "Stereo, can follow a melody",
    "stereo-large": "Stereo, text only",
    "melody-large": "Mono, can follow a melody",
    "large": "Mono, text only",
}
MELODY_MODELS = frozenset({"stereo-melody-large", "melody-large"})
STEREO_MODELS = frozenset({"stereo-melody-large", "stereo-large"})
NORMALIZATION_STRATEGIES = ("loudness", "clip", "peak", "rms")
OUTPUT_FORMATS = ("wav", "mp3")
# Above this, audiocraft generates in overlapping 30 s windows: slower and less coherent.
COHERENT_MAX_SECONDS = 30


@dataclass(frozen=True)
class GenerationRequest:
    """One run's inputs, named exactly as the model names them.

    `input_audio` is a local file path (the service uploads it); `seed` None means random.
    """

    prompt: str = ""
    input_audio: str | None = None
    duration: int = 8
    continuation: bool = False
    continuation_start: int = 0
    continuation_end: int | None = None
    model_version: str = "stereo-melody-large"
    multi_band_diffusion: bool = False
    normalization_strategy: str = "loudness"
    top_k: int = 250
    top_p: float = 0.0
    temperature: float = 1.0
    classifier_free_guidance: int = 3
    output_format: str = "wav"
    seed: int | None = None

    @property
    def is_stereo(self) -> bool:
        return self.model_version in STEREO_MODELS

    @property
    def uses_melody(self) -> bool:
        return bool(self.input_audio) and not self.continuation

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy of every field, for the library and for sidecars."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        """Rebuild from `to_dict` output, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_api_input(self, audio_uri: str | None = None) -> dict[str, Any]:
        """The prediction's `input`: only fields that are set, whole numbers as integers.

        `audio_uri` is the uploaded `input_audio` (https or data URL); never sent empty.
        """
        payload: dict[str, Any] = {
            "model_version": self.model_version,
            "duration": int(self.duration),
            "continuation": bool(self.continuation),
            "continuation_start": int(self.continuation_start),
            "multi_band_diffusion": bool(self.multi_band_diffusion),
            "normalization_strategy": self.normalization_strategy,
            "top_k": int(self.top_k),
            "top_p": float(self.top_p),
            "temperature": float(self.temperature),
            "classifier_free_guidance": int(self.classifier_free_guidance),
            "output_format": self.output_format,
        }
        if self.prompt.strip():
            payload["prompt"] = self.prompt
        if audio_uri:
            payload["input_audio"] = audio_uri
        # The schema says ge=0 although the text says "-1 means end": omit it for "to the end".
        if self.continuation_end is not None and self.continuation_end >= 0:
            payload["continuation_end"] = int(self.continuation_end)
        if self.seed is not None and self.seed not in (0, -1):
            payload["seed"] = int(self.seed)
        return payload
