"""A fresh machine makes music with no account: the page in Chromium on the local engine.

The app runs as `python app.py` with no Replicate token and MUSICGEN_LOCAL_MODEL pointing at a
tiny random-weight MusicGen checkpoint (the real loading code, tiny weights).
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser_support import (
    AppProcess,
    generate,
    new_page,
    result_seconds,
    set_number,
    set_prompt,
    shot,
    wait_result,
    wait_status,
)
from tests.emulator import Emulator

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def app_settings(tiny_musicgen: Any) -> dict[str, str]:
    return {
        "REPLICATE_API_TOKEN": "",
        "MUSICGEN_ENGINE": "auto",  # no token anywhere: the local engine is the default
        "MUSICGEN_LOCAL_MODEL": str(tiny_musicgen.text),
        "MUSICGEN_LOCAL_MELODY_MODEL": str(tiny_musicgen.melody),
        "MUSICGEN_DEVICE": "cpu",
    }


def test_a_fresh_machine_makes_music_with_no_token(
    browser: Any,
    app: AppProcess,
    module_emulator: Emulator,
    tiny_musicgen: Any,
) -> None:
    page = new_page(browser, app.url, height=1200)
    # No token is needed here: the Engine section stays closed until opened.
    assert not page.locator("#engine-choice").is_visible()
    page.locator("#engine-box button.label-wrap").first.click()
    banner = page.locator("#token-banner").inner_text()
    assert "made on this machine" in banner and "no account needed" in banner
    engine = page.locator("#engine-choice input[type=radio]:checked")
    assert engine.get_attribute("value") == "local" or "This machine" in (
        page.locator("#engine-choice label.selected").inner_text()
    )
    expect(page.locator("#local-model")).to_be_visible()
    assert not page.locator("#model-version").is_visible()  # Replicate's models are hidden
    # Advanced speaks of this machine, not of a Replicate model.
    page.locator("#advanced").get_by_text("Advanced").first.click()
    mbd = page.locator("#multi-band-diffusion").inner_text()
    assert "Replicate only" in mbd and "stereo-melody-large" not in mbd
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
    details = page.locator("#result-facts .ms-details").text_content() or ""
    assert "Real-time factor" in details
    # The streamed start of the take became the result, in the same place: one player.
    assert not page.locator("#run-preview").is_visible()
    assert page.locator("#result-audio").is_visible()
    assert module_emulator.creates == before  # nothing went to Replicate
    shot(page, "30-local-engine-no-token")

    # On a phone the checkpoint's name stays clear of the dropdown's arrow.
    phone = new_page(browser, app.url, width=390, height=844)
    phone.locator("#engine-box button.label-wrap").first.click()
    field = phone.locator("#local-model input")
    field.wait_for()
    padding = field.evaluate("(el) => parseFloat(getComputedStyle(el).paddingRight)")
    assert padding >= 24
    assert field.evaluate("(el) => getComputedStyle(el).textOverflow") == "ellipsis"
    phone.locator("#local-model").scroll_into_view_if_needed()
    shot(phone, "31-local-engine-phone", full_page=False)
    phone.context.close()
