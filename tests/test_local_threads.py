"""The app's local engine makes torch's CPU threads sleep while they wait, instead of spinning.

Spinning threads burned several times a take's CPU on a busy machine (services/engines/local/
threads.py; bench.local_batching measures it). What a musician's machine shows is OpenMP's own
account of its settings, printed by libgomp as it loads (OMP_DISPLAY_ENV), in a fresh process
that starts the way app.py does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.engines.local.threads import WAIT_POLICY, sleep_while_waiting

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
