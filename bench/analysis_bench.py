"""What "from take to track" costs on this machine: run by hand, numbers in the report.

    python -m bench.analysis_bench

Times, on a synthesized 30 s stereo take at 32 kHz (MusicGen's rate): tempo and key (the first
measurement in a process, which loads librosa's beat tracker, then warm ones), basic-pitch's
transcription (real model, onnxruntime), and a demucs split with MUSICGEN_STEMS_MODEL
(default demucs_unittest here: htdemucs' weights need a download).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from services.analysis.midi import Transcriber
from services.analysis.stems import StemSplitter
from services.analysis.tempo_key import measure
from services.library import Library
from tests.support.synth_music import A_MINOR, clicks, notes, write_wav

SECONDS = 30.0
RATE = 32000


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        frames = int(RATE * SECONDS)
        take = clicks(97.0, SECONDS, RATE) + np.resize(notes(A_MINOR, rate=RATE), frames)
        wav = write_wav(take, folder / "take.wav", rate=RATE, channels=2)
        print(f"load average before: {os.getloadavg()}")
        cold = timed(lambda: measure(wav))
        warm = [timed(lambda: measure(wav)) for _ in range(5)]
        print(
            f"tempo and key of a {SECONDS:g} s take: first {cold:.2f} s (loads the analysis), "
            f"then median {statistics.median(warm):.2f} s (of {len(warm)}); {measure(wav)}"
        )
        library = Library(folder / "data")
        record = library.add_run(
            None, {"prompt": "bench"}, status="succeeded", audio_src=wav, audio_seconds=SECONDS
        )
        transcriber = Transcriber(library)
        first = timed(lambda: transcriber.transcribe(record.id, None))
        again = timed(lambda: transcriber.transcribe(record.id, None))
        print(
            f"basic-pitch MIDI of {SECONDS:g} s: first {first:.2f} s (loads the model), "
            f"then {again:.2f} s"
        )
        model = os.environ.get("MUSICGEN_STEMS_MODEL", "demucs_unittest")
        splitter = StemSplitter(library, model)
        first = timed(lambda: splitter.split(record.id, None))
        again = timed(lambda: splitter.split(record.id, None))
        print(
            f"demucs split ({model}) of {SECONDS:g} s: first {first:.2f} s (loads the model), "
            f"then {again:.2f} s"
        )
        print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
