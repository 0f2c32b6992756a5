"""Cold start: `python app.py` until its port answers 200, beside `python -c "import gradio"`
(timed up to the end of the import, without the interpreter's shutdown)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.emulator import ROOT, EmulatorProcess, free_port
from bench.stats import p50

GIVE_UP_SECONDS = 120.0


@dataclass
class ColdStart:
    app: list[float] = field(default_factory=list)
    import_gradio: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        app, imp = p50(self.app), p50(self.import_gradio)
        return {
            "app_p50": app,
            "import_gradio_p50": imp,
            "beyond_import": app - imp,
            "app": self.app,
            "import_gradio": self.import_gradio,
            "errors": self.errors,
        }


def app_env(emulator: EmulatorProcess, port: int, data_dir: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "MUSICGEN_DATA_DIR": data_dir,
        "REPLICATE_BASE_URL": emulator.base_url,
        "REPLICATE_API_TOKEN": emulator.token,
    }


def wait_for_200(url: str, proc: subprocess.Popen[bytes], give_up: float) -> None:
    """Poll `url` every 10 ms until it answers 200; raise if the process dies or time runs out."""
    with httpx.Client(timeout=2) as http:
        while True:
            try:
                if http.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"the process exited with {proc.returncode} before answering")
            if time.monotonic() > give_up:
                raise TimeoutError(f"{url} did not answer 200 in time")
            time.sleep(0.01)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_app(
    emulator: EmulatorProcess, data_dir: str, variant: str = "current"
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `python app.py` on a free port (or, for another variant of our service, the same
    app through bench.app_variant); returns the process and its URL (not yet up)."""
    port = free_port()
    command = [sys.executable, "app.py"]
    if variant != "current":
        command = [sys.executable, "-m", "bench.app_variant", variant]
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=app_env(emulator, port, data_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return proc, f"http://127.0.0.1:{port}"


def time_app(emulator: EmulatorProcess) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as data_dir:
        start = time.perf_counter()
        proc, url = start_app(emulator, data_dir)
        try:
            wait_for_200(url + "/", proc, time.monotonic() + GIVE_UP_SECONDS)
            return time.perf_counter() - start
        except (RuntimeError, TimeoutError) as exc:
            stop(proc)
            err = proc.stderr.read().decode(errors="replace")[-600:] if proc.stderr else ""
            raise RuntimeError(f"{exc}: {err}") from exc
        finally:
            stop(proc)


def time_import_gradio() -> float:
    start = time.perf_counter()
    subprocess.run(
        # os._exit: the interpreter's shutdown after importing gradio takes ~0.4 s here, and
        # the app's clock stops at its first 200, long before any shutdown.
        [sys.executable, "-c", "import gradio, os; os._exit(0)"],
        cwd=ROOT,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
        check=True,
    )
    return time.perf_counter() - start


def run_coldstart(emulator: EmulatorProcess, repeats: int) -> ColdStart:
    """Alternate the two, `repeats` times each, after one untimed warm-up of each (disk cache)."""
    result = ColdStart()
    try:
        time_import_gradio()
        time_app(emulator)
        for _ in range(repeats):
            result.import_gradio.append(time_import_gradio())
            result.app.append(time_app(emulator))
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        result.errors.append(str(exc))
    return result
