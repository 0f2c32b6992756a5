"""The app's helper threads sleep while they wait, instead of spinning: torch's (the local
engine's OpenMP) and numpy's (OpenBLAS, which runs on the calling thread alone).

Spinning threads burned several times a take's CPU on a busy machine (services/
threads.py; bench.local_batching measures it). What a musician's machine shows is OpenMP's own
account of its settings, printed by libgomp as it loads (OMP_DISPLAY_ENV), in a fresh process
that starts the way app.py does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.threads import BLAS_THREADS, WAIT_POLICY, one_blas_thread, sleep_while_waiting

REPO = Path(__file__).resolve().parent.parent

# The app's composition: settings from the environment, the local engine from the registry,
# then torch (the first run imports it) and one operation on its threads.
APP_START = """
from services.settings import Settings
from services.engines.registry import local_engine
assert local_engine(Settings.from_env()) is not None
import torch
torch.ones(64, 64).sum()
"""


def openmp_settings(tmp_path: Path) -> str:
    """What libgomp says of its settings in a process started as the app starts."""
    env = {k: v for k, v in os.environ.items() if k != WAIT_POLICY}
    env.update(MUSICGEN_ENGINE="local", MUSICGEN_DATA_DIR=str(tmp_path), OMP_DISPLAY_ENV="VERBOSE")
    done = subprocess.run(
        [sys.executable, "-c", APP_START],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stderr


def test_the_apps_torch_threads_sleep_instead_of_spinning(tmp_path: Path) -> None:
    shown = openmp_settings(tmp_path)
    assert "GOMP_SPINCOUNT = '0'" in shown, shown


def test_an_operators_own_wait_policy_stands() -> None:
    env = {WAIT_POLICY: "ACTIVE"}
    assert sleep_while_waiting(env)
    assert env == {WAIT_POLICY: "ACTIVE"}
    unset: dict[str, str] = {}
    sleep_while_waiting(unset)
    assert unset == {WAIT_POLICY: "PASSIVE"}


# What importing app.py does before its own imports, then numpy's linear algebra at work.
APP_IMPORT_THEN_NUMPY = """
import os
import app
import numpy as np
np.linalg.lstsq(np.random.rand(400, 40), np.random.rand(400), rcond=None)
print(len(os.listdir("/proc/self/task")))
"""


def test_the_apps_numpy_starts_no_spinning_helper_thread(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != BLAS_THREADS}
    env.update(MUSICGEN_ENGINE="replicate", MUSICGEN_DATA_DIR=str(tmp_path))

    def threads(code: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
            timeout=120, check=True,
        )  # fmt: skip
        return int(run.stdout.split()[-1])

    # Without the app's setup, OpenBLAS starts a helper on this machine of several cores.
    assert threads(APP_IMPORT_THEN_NUMPY.replace("import app\n", "")) > 1
    assert threads(APP_IMPORT_THEN_NUMPY) == 1


def test_an_operators_own_blas_threads_stand() -> None:
    env = {BLAS_THREADS: "4"}
    assert one_blas_thread(env)
    assert env == {BLAS_THREADS: "4"}
    unset: dict[str, str] = {}
    one_blas_thread(unset)
    assert unset == {BLAS_THREADS: "1"}
