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
from collections.abc import Callable
from pathlib import Path

import pytest

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


def fresh_process(code: str, unset: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`code` run in a new Python process in the repository, without `unset`, with `env`."""
    full = {k: v for k, v in os.environ.items() if k != unset}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=full, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip


def openmp_settings(tmp_path: Path) -> str:
    """What libgomp says of its settings in a process started as the app starts."""
    return fresh_process(
        APP_START,
        WAIT_POLICY,
        MUSICGEN_ENGINE="local",
        MUSICGEN_DATA_DIR=str(tmp_path),
        OMP_DISPLAY_ENV="VERBOSE",
    ).stderr


def test_the_apps_torch_threads_sleep_instead_of_spinning(tmp_path: Path) -> None:
    shown = openmp_settings(tmp_path)
    assert "GOMP_SPINCOUNT = '0'" in shown, shown


# What importing app.py does before its own imports, then numpy's linear algebra at work.
APP_IMPORT_THEN_NUMPY = """
import os
import app
import numpy as np
np.linalg.lstsq(np.random.rand(400, 40), np.random.rand(400), rcond=None)
print(len(os.listdir("/proc/self/task")))
"""


def test_the_apps_numpy_starts_no_spinning_helper_thread(tmp_path: Path) -> None:
    def threads(code: str) -> int:
        run = fresh_process(
            code, BLAS_THREADS, MUSICGEN_ENGINE="replicate", MUSICGEN_DATA_DIR=str(tmp_path)
        )
        return int(run.stdout.split()[-1])

    # Without the app's setup, OpenBLAS starts a helper on this machine of several cores.
    assert threads(APP_IMPORT_THEN_NUMPY.replace("import app\n", "")) > 1
    assert threads(APP_IMPORT_THEN_NUMPY) == 1


@pytest.mark.parametrize(
    ("set_up", "name", "ours", "theirs"),
    [
        (sleep_while_waiting, WAIT_POLICY, "PASSIVE", "ACTIVE"),
        (one_blas_thread, BLAS_THREADS, "1", "4"),
    ],
)
def test_an_operators_own_setting_stands(
    set_up: Callable[[dict[str, str]], bool], name: str, ours: str, theirs: str
) -> None:
    env = {name: theirs}
    assert set_up(env)
    assert env == {name: theirs}
    unset: dict[str, str] = {}
    set_up(unset)
    assert unset == {name: ours}
