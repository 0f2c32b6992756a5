"""Shared pytest fixtures. The emulator fixtures come first; others may append theirs below."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser_support import SERVER_TOKEN, VISITOR_TOKEN, AppProcess, chromium, studio_app
from tests.emulator import Emulator, EmulatorConfig, run_emulator

if TYPE_CHECKING:  # importing it imports torch: only inside the fixture at run time
    from tests.support.tiny_musicgen import TinyCheckpoints


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    """Fast test timings; override this fixture in a module to change the emulator's knobs."""
    return EmulatorConfig.fast()


@pytest.fixture
def emulator(emulator_config: EmulatorConfig) -> Iterator[Emulator]:
    """A fresh Replicate emulator on 127.0.0.1 (free port) for one test."""
    with run_emulator(emulator_config) as running:
        yield running


# -- a module's running app ------------------------------------------------------------------
# Module-scoped (one app per module: starting `python app.py` takes seconds), and so per
# module under `--dist loadscope`: no two modules share an emulator, an app or its library.


@pytest.fixture(scope="module")
def module_emulator() -> Iterator[Emulator]:
    """One emulator for a module's tests (they share one app): fast timings, and it takes
    SERVER_TOKEN and VISITOR_TOKEN (tests.browser_support)."""
    config = EmulatorConfig.fast(max_wait_seconds=0.2, tokens=[SERVER_TOKEN, VISITOR_TOKEN])
    with run_emulator(config) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def app_settings() -> dict[str, str]:
    """Environment the module's `app` adds to a local install's (`app_env`); a module overrides
    this fixture to run its app with other settings."""
    return {}


@pytest.fixture(scope="module")
def app(
    module_emulator: Emulator,
    app_settings: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AppProcess]:
    """`python app.py` for a module's tests: a local install with a server-wide token
    (SERVER_TOKEN), its runs on the module's emulator, then `app_settings`."""
    folder = tmp_path_factory.mktemp("app")
    env = {"REPLICATE_API_TOKEN": SERVER_TOKEN, **app_settings}
    with studio_app(module_emulator, folder, **env) as running:
        yield running


@pytest.fixture(scope="module")
def local_app(
    module_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppProcess]:
    """A local install without a server token: each visitor pastes their own (VISITOR_TOKEN)
    or passes it as `api_token`."""
    with studio_app(module_emulator, tmp_path_factory.mktemp("local")) as running:
        yield running


@pytest.fixture(scope="module")
def shared_app(
    module_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppProcess]:
    """A shared deployment (as a public Space runs) with a server-wide token (SERVER_TOKEN)."""
    folder = tmp_path_factory.mktemp("shared")
    with studio_app(
        module_emulator, folder, REPLICATE_API_TOKEN=SERVER_TOKEN, MUSICGEN_SHARED="1"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for a module's tests; each test opens its own page (`new_page`)."""
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="session")
def tiny_musicgen(tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoints:
    """Tiny random-weight MusicGen checkpoints (text, melody, stereo), built once per session.

    Returns `tests.support.tiny_musicgen.TinyCheckpoints`: three folders, each usable as
    `MUSICGEN_LOCAL_MODEL` / `MUSICGEN_LOCAL_MELODY_MODEL`. Skips without torch/transformers.
    """
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.support.tiny_musicgen import build_all

    return build_all(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for a module of tiny-checkpoint tests (`pytestmark =
    pytest.mark.usefixtures("one_torch_thread")`): tiny matrices run faster on one thread than
    on two fighting over a busy 2-core machine."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def measured_clips(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every clip the app measures by decoding (validation and uploads alike), in order."""
    from services import audio

    measured: list[Path] = []
    real_measure = audio.measure

    def counting_measure(path: Any, **options: Any) -> Any:
        measured.append(Path(path))
        return real_measure(path, **options)

    monkeypatch.setattr(audio, "measure", counting_measure)
    monkeypatch.setattr("services.generation.policy.measure", counting_measure)
    return measured
