"""Split a run into stems (drums, bass, other, vocals, ...) with demucs, in this process.

The stems are filed with their run under `<data_dir>/tracks/<run id>/stems/` (WAV, the mix's
own sample rate and channels, each exactly as long as the mix), named in the record's `stems`;
they survive a restart and are removed with the run. `MUSICGEN_STEMS_MODEL` names the model:
anything demucs' `get_model` accepts (default htdemucs; `demucs_unittest` is a tiny random
model for tests).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np

from services.analysis.jobs import JobControl
from services.compose import audio_ops
from services.errors import StudioError
from services.library import Library, RunNotFound, RunRecord
from services.library.files import move_atomic

DEFAULT_STEMS_MODEL = "htdemucs"
STEMS_SUBDIR = "stems"
NEEDS = (
    "Splitting into stems runs demucs on this machine, and it is not installed here. Install "
    "torch (on a machine without a GPU its CPU build: pip install torch --index-url "
    "https://download.pytorch.org/whl/cpu), then pip install demucs (4.1 or later), or "
    "everything at once: pip install -r requirements-local.txt."
)
_SAFE = re.compile(r"[^a-z0-9_]+")


def stems_available() -> bool:
    """True when torch and demucs are installed (checked without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "demucs"))


def stem_names(record: RunRecord) -> list[str]:
    """The run's stems, in the model's order ([] before it was split)."""
    return list(((record.stems or {}).get("files") or {}).keys())


def stem_file(library: Library, record: RunRecord, stem: str) -> Path | None:
    """The stem's WAV on disk, or None if the run has no such stem."""
    rel = ((record.stems or {}).get("files") or {}).get(stem)
    return library.track_file(rel) if isinstance(rel, str) else None


class StemSplitter:
    """Separates runs for every visitor; one separation at a time (it takes every core)."""

    def __init__(
        self, library: Library, model_name: str = DEFAULT_STEMS_MODEL, device: str | None = None
    ):
        self._library = library
        self.model_name = model_name.strip() or DEFAULT_STEMS_MODEL
        self._device = device
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        """The model, loaded on first use (demucs downloads a named model once)."""
        if self._model is None:
            from demucs.pretrained import get_model

            try:
                model = get_model(self.model_name)
            except Exception as err:  # unknown name, no network for a download, bad file
                raise StudioError(
                    f"The stems model {self.model_name!r} (MUSICGEN_STEMS_MODEL) could not be "
                    f"loaded: {err}"
                ) from err
            model.eval()
            self._model = model
        return self._model

    def split(self, run_id: str, owner: str | None, control: JobControl | None = None) -> RunRecord:
        """Separate the run's audio, file its stems, return the record with `stems`.

        Raises RunNotFound, StudioError (nothing to split, demucs missing, model unusable) or
        JobCanceled (stopped: nothing is kept). CPU/GPU work: call it off the event loop.
        """
        if not stems_available():
            raise StudioError(NEEDS)
        control = control or JobControl()
        record = self._library.require(run_id, owner)
        source = self._library.audio_file(record)
        if source is None:
            raise StudioError("This result has no audio to split.")
        control.report(0.0, "Waiting for the separator…")
        with self._lock:
            control.report(0.02, f"Loading {self.model_name}…")
            model = self._load()
            mix = audio_ops.load(source)
            stems = self._separate(model, mix, control)
            return self._file(record, mix, stems)

    def _separate(self, model: Any, mix: Any, control: JobControl) -> dict[str, np.ndarray]:
        """Each source of `model` as float samples (frames, channels) at the mix's rate."""
        import torch
        from demucs.apply import apply_model
        from julius.resample import resample_frac

        from services.engines.local.checkpoints import choose_device

        frames = int(mix.frame_count())
        data = torch.from_numpy(audio_ops.samples(mix).T.astype(np.float32))  # (channels, frames)
        channels = data.shape[0]
        wide = (
            data.mean(0, keepdim=True).repeat(model.audio_channels, 1)
            if channels != model.audio_channels
            else data
        )
        wide = resample_frac(wide, mix.frame_rate, model.samplerate)
        # demucs' own normalisation: the model was trained on unit-variance mixes.
        ref = wide.mean(0)
        mean, std = ref.mean(), ref.std() + 1e-8
        sources = len(model.sources)

        def progress(info: dict[str, Any]) -> None:
            if info.get("state") != "end":
                control.report(control.done)  # a chance to stop between chunks
                return
            length = max(1, wide.shape[-1])
            share = min(1.0, (int(info.get("segment_offset", 0)) + 1) / length)
            bag = max(1, int(info.get("models", 1)))
            whole = (int(info.get("model_idx_in_bag", 0)) + share) / bag
            control.report(0.05 + 0.9 * whole, f"Separating {sources} stems…")

        device = choose_device(self._device).name
        # Audio shorter than the model's segment goes through in one piece: cut into segments
        # it would be padded to a whole segment first (40 s of work for a 2 s clip).
        split = wide.shape[-1] > float(getattr(model, "segment", 0) or 0) * model.samplerate
        with torch.no_grad():
            out = apply_model(
                model, ((wide - mean) / std)[None], device=device, split=split, overlap=0.25,
                progress=False, callback=progress,
            )[0]  # fmt: skip
        out = out * std + mean
        control.report(0.96, "Writing the stems…")
        result: dict[str, np.ndarray] = {}
        for name, stem in zip(model.sources, out, strict=True):
            back = resample_frac(stem.cpu(), model.samplerate, mix.frame_rate)
            back = back.mean(0, keepdim=True) if channels == 1 else back[:channels]
            # Resampling there and back can leave a sample or two over or short.
            fitted = np.zeros((frames, channels), np.float64)
            usable = min(frames, back.shape[-1])
            fitted[:usable] = back[:, :usable].T.double().numpy()
            result[str(name)] = fitted
        return result

    def _file(self, record: RunRecord, mix: Any, stems: dict[str, np.ndarray]) -> RunRecord:
        """Write every stem beside the run (replacing an earlier split) and record them."""
        folder = self._library.track_dir(record.id) / STEMS_SUBDIR
        folder.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}
        for name, samples in stems.items():
            safe = _SAFE.sub("_", name.lower()) or "stem"
            dest = folder / f"{safe}.wav"
            part = folder / f".{safe}.part.wav"
            audio_ops.export(audio_ops.from_samples(samples, mix), part, "wav")
            move_atomic(part, dest)
            files[name] = dest.relative_to(self._library.data_dir).as_posix()
        for old in folder.glob("*.wav"):
            if old.relative_to(self._library.data_dir).as_posix() not in files.values():
                old.unlink(missing_ok=True)  # a stem of an earlier model this one lacks
        try:
            return self._library.update(record.id, stems={"model": self.model_name, "files": files})
        except RunNotFound:
            # Deleted while it was being split: nothing of it may stay behind.
            shutil.rmtree(self._library.track_dir(record.id), ignore_errors=True)
            raise
