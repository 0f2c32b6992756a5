"""A fresh machine makes music with no account: the page in Chromium on the local engine.

The app runs as `python app.py` with no Replicate token and MUSICGEN_LOCAL_MODEL pointing at a
tiny random-weight MusicGen checkpoint (the real loading code, tiny weights).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser_support import (
    AppProcess,
    app_env,
    browser,  # noqa: F401 - fixture
    generate,
    module_emulator,  # noqa: F401 - fixture
    new_page,
    result_seconds,
    running_app,
    set_number,
    set_prompt,
    shot,
    wait_result,
    wait_status,
)
from tests.emulator import Emulator

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def app(
    module_emulator: Emulator,  # noqa: F811
    tiny_musicgen: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AppProcess]:
    root = tmp_path_factory.mktemp("local-page")
    env = app_env(
        module_emulator,
        root / "data",
        GRADIO_TEMP_DIR=str(root / "gr"),
        MUSICGEN_ENGINE="auto",  # no token anywhere: the local engine is the default
        MUSICGEN_LOCAL_MODEL=str(tiny_musicgen.text),
        MUSICGEN_LOCAL_MELODY_MODEL=str(tiny_musicgen.melody),
        MUSICGEN_DEVICE="cpu",
    )
    with running_app(env, root / "app.log") as running:
        yield running


def test_a_fresh_machine_makes_music_with_no_token(
    browser: Any,  # noqa: F811
    app: AppProcess,
    module_emulator: Emulator,  # noqa: F811
    tiny_musicgen: Any,
) -> None:
    page = new_page(browser, app.url, height=1200)
    banner = page.locator("#token-banner").inner_text()
    assert "made on this machine" in banner and "no account needed" in banner
    engine = page.locator("#engine-choice input[type=radio]:checked")
    assert engine.get_attribute("value") == "local" or "This machine" in (
        page.locator("#engine-choice label.selected").inner_text()
    )
    assert page.locator("#local-model").is_visible()
    assert not page.locator("#model-version").is_visible()  # Replicate's models are hidden
    set_prompt(page, "Lo-fi piano with vinyl crackle")
    set_number(page, "duration-slider", 2)
    before = module_emulator.creates

    generate(page)

    assert wait_status(page, "succeeded", "failed", timeout_ms=120_000) == "succeeded"
    wait_result(page)
    assert result_seconds(page) == pytest.approx(2, abs=0.1)
    facts = page.locator("#result-facts").inner_text()
    assert "This machine (cpu)" in facts
    assert str(tiny_musicgen.text) in facts  # the checkpoint that made it
    assert "Real-time factor" in facts
    assert module_emulator.creates == before  # nothing went to Replicate
    shot(page, "30-local-engine-no-token")
