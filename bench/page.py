"""Through the page: the same run called through gradio_client on our app's `/generate`, beside
the floor app (bench.floor_app) whose handler only waits the run's known time and returns a
ready file of the same size. Both calls download the returned audio, as gradio_client does.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.coldstart import GIVE_UP_SECONDS, app_env, start_app, stop, wait_for_200
from bench.emulator import ROOT, EmulatorProcess, free_port
from bench.stats import p50, p95

QUEUE_SECONDS = 0.2
AUDIO_SECONDS = 8


@dataclass
class PageResult:
    run_seconds: float
    ours: list[float] = field(default_factory=list)  # end-to-end seconds per call
    floor: list[float] = field(default_factory=list)
    skipped: str | None = None
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        known = QUEUE_SECONDS + self.run_seconds
        ours = [t - known for t in self.ours]
        floor = [t - known for t in self.floor]
        return {
            "run_seconds": self.run_seconds,
            "skipped": self.skipped,
            "ours_added_p50": p50(ours),
            "ours_added_p95": p95(ours),
            "floor_added_p50": p50(floor),
            "floor_added_p95": p95(floor),
            "above_floor_p50": p50(ours) - p50(floor),
            "ours": self.ours,
            "floor": self.floor,
            "errors": self.errors,
        }


def _client(url: str, downloads: Path) -> Any:
    from gradio_client import Client

    return Client(url, verbose=False, download_files=str(downloads), analytics_enabled=False)


def _generate_parameters(client: Any) -> list[dict[str, Any]] | None:
    """The parameters of the app's `/generate`, or None when it has no such endpoint."""
    api = client.view_api(return_format="dict", print_info=False) or {}
    endpoint = api.get("named_endpoints", {}).get("/generate")
    return None if endpoint is None else endpoint.get("parameters", [])


def _arguments(parameters: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Our run's inputs; parameters without a default that we do not set are sent empty."""
    given: dict[str, Any] = {"prompt": "bench: lo-fi piano loop", "duration": AUDIO_SECONDS}
    given["seed"] = seed
    for parameter in parameters:
        name = parameter["parameter_name"]
        if name not in given and not parameter.get("parameter_has_default"):
            given[name] = None
    return given


def _floor_file(folder: Path) -> Path:
    from tests.emulator.audio import render_output

    path = folder / "floor.wav"
    path.write_bytes(
        render_output(
            seconds=AUDIO_SECONDS, channels=2, seed=1, prompt="floor", output_format="wav"
        )
    )
    return path


def run_page(
    emulator: EmulatorProcess, run_seconds: list[float], repeats: int, variant: str = "current"
) -> list[PageResult]:
    results = [PageResult(s) for s in run_seconds]
    with tempfile.TemporaryDirectory(prefix="bench-page-") as scratch:
        folder = Path(scratch)
        port = free_port()
        audio = _floor_file(folder)
        floor_proc = subprocess.Popen(
            [sys.executable, "-m", "bench.floor_app", "--port", str(port), "--file", str(audio)],
            cwd=ROOT,
            env=app_env(emulator, port, str(folder / "floor-data")),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        app_proc, app_url = start_app(emulator, str(folder / "data"), variant)
        try:
            floor_url = f"http://127.0.0.1:{port}"
            give_up = time.monotonic() + GIVE_UP_SECONDS
            wait_for_200(floor_url + "/", floor_proc, give_up)
            wait_for_200(app_url + "/", app_proc, give_up)
            floor = _client(floor_url, folder / "dl-floor")
            ours = _client(app_url, folder / "dl-ours")
            parameters = _generate_parameters(ours)
            if parameters is None:
                for result in results:
                    result.skipped = "our app has no /generate endpoint yet"
                return results
            seed = 70_000
            emulator.configure(queue_seconds=QUEUE_SECONDS, stream=True)
            for result in results:
                emulator.configure(run_seconds=result.run_seconds)
                known = QUEUE_SECONDS + result.run_seconds
                # One untimed call of each first: Gradio's first call warms its own caches.
                for timed in [False] + [True] * repeats:
                    seed += 1
                    start = time.perf_counter()
                    try:
                        ours.predict(**_arguments(parameters, seed), api_name="/generate")
                    except Exception as exc:  # reported in the results, the bench goes on
                        result.errors.append(f"ours: {type(exc).__name__}: {exc}")
                        continue
                    if timed:
                        result.ours.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    floor.predict("bench", known, api_name="/generate")
                    if timed:
                        result.floor.append(time.perf_counter() - start)
        finally:
            stop(floor_proc)
            stop(app_proc)
    return results
