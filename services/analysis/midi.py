"""Transcribe a run (or one of its stems) to MIDI with Spotify's basic-pitch, through
onnxruntime (its trained weights ship inside the package: this works offline).

The .mid carries the run's measured tempo; a piano-roll PNG of the notes sits beside it. Both
are filed under `<data_dir>/tracks/<run id>/midi/` and named in the record's `midi`, keyed by
what was transcribed ("mix" or the stem's name).
"""

from __future__ import annotations

import copy
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.analysis.jobs import JobControl
from services.analysis.piano_roll import render_piano_roll
from services.analysis.stems import STEMS_SUBDIR, stem_file, stem_names
from services.errors import StudioError
from services.library import Library, RunNotFound, RunRecord
from services.library.files import move_atomic

MIX = "mix"
MIDI_SUBDIR = "midi"
DEFAULT_TEMPO = 120.0  # MIDI's own default, for a run whose tempo could not be measured
NEEDS = (
    "Transcribing to MIDI runs Spotify's basic-pitch on this machine, and it is not installed "
    "here. Install it without TensorFlow: pip install onnxruntime pretty-midi mir-eval "
    "'resampy>=0.4.3' && pip install --no-deps 'basic-pitch>=0.4.0'."
)


def midi_available() -> bool:
    """True when basic-pitch and onnxruntime are installed (checked without importing them)."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("basic_pitch", "onnxruntime", "pretty_midi")
    )


@dataclass(frozen=True)
class Transcription:
    """What one transcription made: the record (with `midi`), the .mid, the piano roll."""

    record: RunRecord
    source: str
    midi_path: Path
    roll_path: Path
    notes: int


def midi_entry(library: Library, record: RunRecord, source: str) -> tuple[Path, Path] | None:
    """The (.mid, piano roll) of `source` ("mix" or a stem) when it was transcribed."""
    entry = (record.midi or {}).get(source) or {}
    mid = library.track_file(str(entry.get("path") or ""))
    roll = library.track_file(str(entry.get("roll") or ""))
    return (mid, roll) if mid is not None and roll is not None else None


class Transcriber:
    """Transcribes runs for every visitor; the ONNX model is loaded once, on first use."""

    def __init__(self, library: Library):
        self._library = library
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._model is None:
            from basic_pitch import FilenameSuffix, build_icassp_2022_model_path
            from basic_pitch.inference import Model

            self._model = Model(build_icassp_2022_model_path(FilenameSuffix.onnx))
        return self._model

    def transcribe(
        self,
        run_id: str,
        owner: str | None,
        stem: str | None = None,
        control: JobControl | None = None,
    ) -> Transcription:
        """Transcribe the run's mix, or its `stem`; file the .mid and piano roll.

        Raises RunNotFound, StudioError (no audio, no such stem, basic-pitch missing) or
        JobCanceled. CPU work: call it off the event loop.
        """
        if not midi_available():
            raise StudioError(NEEDS)
        control = control or JobControl()
        record = self._library.require(run_id, owner)
        source = (stem or "").strip() or MIX
        if source == MIX:
            audio = self._library.audio_file(record)
            if audio is None:
                raise StudioError("This result has no audio to transcribe.")
        else:
            audio = stem_file(self._library, record, source)
            if audio is None:
                have = ", ".join(stem_names(record)) or "none yet: split it into stems first"
                raise StudioError(f"This result has no stem {source!r} (its stems: {have}).")
        control.report(0.0, "Waiting for the transcriber…")
        with self._lock:
            control.report(0.05, "Listening for notes…")
            midi, notes = self._predict(audio, record.bpm or DEFAULT_TEMPO, control)
        control.report(0.95, "Writing the MIDI file…")
        return self._file(record, source, midi, notes)

    def _predict(self, audio: Path, tempo: float, control: JobControl) -> tuple[Any, list[Any]]:
        from basic_pitch.inference import predict

        model = copy.copy(self._load())
        inner = model.predict
        windows = [0]

        def predict_window(window: Any) -> Any:
            # One ~2 s window at a time: a chance to report and to stop.
            windows[0] += 1
            control.report(min(0.9, 0.05 + 0.03 * windows[0]))
            return inner(window)

        model.predict = predict_window
        _, midi, events = predict(audio, model, midi_tempo=float(tempo))
        return midi, sorted(events, key=lambda e: (e[0], e[2]))

    def _file(self, record: RunRecord, source: str, midi: Any, events: list[Any]) -> Transcription:
        folder = self._library.track_dir(record.id) / MIDI_SUBDIR
        folder.mkdir(parents=True, exist_ok=True)
        name = source if source == MIX else f"{STEMS_SUBDIR}-{source}"
        mid, roll = folder / f"{name}.mid", folder / f"{name}.png"
        part = folder / f".{name}.part.mid"
        midi.write(str(part))
        move_atomic(part, mid)
        notes = [(float(e[0]), float(e[1]), int(e[2]), float(e[3])) for e in events]
        seconds = float(record.audio_seconds or 0.0)
        render_piano_roll(notes, seconds, folder / f".{name}.part.png", record.bpm)
        move_atomic(folder / f".{name}.part.png", roll)
        rel = self._library.data_dir
        entry = {
            "path": mid.relative_to(rel).as_posix(),
            "roll": roll.relative_to(rel).as_posix(),
            "notes": len(notes),
            "tempo": record.bpm or DEFAULT_TEMPO,
        }
        try:
            current = self._library.require(record.id)
            updated = self._library.update(record.id, midi={**(current.midi or {}), source: entry})
        except RunNotFound:
            mid.unlink(missing_ok=True)
            roll.unlink(missing_ok=True)
            raise
        return Transcription(updated, source, mid, roll, len(notes))
