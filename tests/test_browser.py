"""The studio page in a real Chromium, against `python app.py` wired to the emulator.

One app per mode is shared by the tests of this module (they run in file order): a local
install where the visitor pastes their own token, and a shared deployment with a server token.
Screenshots of the main states land in test-artifacts/.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from services.audio import probe
from tests.browser_support import (
    FINAL_STATUSES,
    VISITOR_TOKEN,
    AppProcess,
    act_and_wait_text,
    card,
    card_run_id,
    choose_dropdown,
    choose_radio,
    creates,
    emulator_timing,
    generate,
    mark,
    new_page,
    open_page,
    playable_seconds,
    prediction_link,
    progress_value,
    result_duration_text,
    result_seconds,
    run_progress,
    set_checkbox,
    set_number,
    set_prompt,
    set_token,
    shot,
    status_prediction_id,
    upload_audio,
    wait_card,
    wait_form_errors,
    wait_progress,
    wait_progress_steps,
    wait_result,
    wait_status,
)
from tests.emulator import Emulator
from tests.support.audio_files import make_tone
from tests.support.stored import files_holding

pytestmark = pytest.mark.browser


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return make_tone(tmp_path / "riff.wav", 6.0, channels=1, freq=330)


def newest_prediction(emulator: Emulator) -> Any:
    return max(emulator.predictions.values(), key=lambda p: p.created)


def visitor(browser: Any, app: AppProcess, **size: int) -> Any:
    page = new_page(browser, app.url, **size)
    if page.locator("#token-box").count():
        set_token(page, VISITOR_TOKEN)
    return page


# -- the whole journey ------------------------------------------------------------------------


def test_every_control_reaches_the_model_and_the_result_plays_and_stays(
    browser: Any,
    local_app: AppProcess,
    module_emulator: Emulator,
    clip: Path,
) -> None:
    page = new_page(browser, local_app.url)
    banner = page.locator("#token-banner")
    assert "No Replicate API token" in banner.inner_text()
    set_prompt(page, "anything")
    before = module_emulator.creates
    generate(page)
    assert "No Replicate API token" in wait_form_errors(page, "token")
    assert module_emulator.creates == before
    shot(page, "01-first-visit-no-token")
    set_token(page, VISITOR_TOKEN)
    page.wait_for_function("() => !document.querySelector('#token-banner')?.innerText.trim()")

    prompt = "Dusty lo-fi piano over brushed drums, 80 bpm"
    set_prompt(page, prompt)
    choose_radio(page, "model-version", "melody-large")
    set_checkbox(page, "long-mode", True)
    page.wait_for_function(
        "() => document.querySelector('#duration-slider input[type=number]').max === '300'"
    )
    set_number(page, "duration-slider", 35)
    upload_audio(page, clip)
    choose_radio(page, "audio-use", "continuation")
    set_checkbox(page, "to-end", False)
    set_number(page, "continuation-start", 1)
    set_number(page, "continuation-end", 4)
    page.locator("#advanced").get_by_text("Advanced").first.click()
    set_number(page, "top-k", 200)
    set_number(page, "top-p", 0.5)
    set_number(page, "temperature", 0.8)
    set_number(page, "guidance", 5)
    set_checkbox(page, "random-seed", False)
    seed_box = page.locator("#seed input")
    seed_box.fill("4242")
    seed_box.blur()
    choose_dropdown(page, "normalization", "peak:")
    choose_radio(page, "output-format", "mp3")
    set_checkbox(page, "multi-band-diffusion", True)
    shot(page, "02-every-control-filled")

    before = len(creates(module_emulator))
    with emulator_timing(module_emulator, run_seconds=3.0):
        generate(page)
        if wait_progress_steps(page, 2):
            shot(page, "03-running-progress")
        status = wait_status(page, *FINAL_STATUSES)
    assert status == "succeeded", page.locator("#run-status").inner_text()
    seen = [v for v in run_progress(page) if 0 < v < 100]
    assert len(seen) >= 2, f"the progress bar did not move while running: {seen}"
    assert seen == sorted(seen)
    assert progress_value(page) == 100
    # The long duration was allowed with its warning shown beside the form.
    assert "less coherent" in page.locator("#form-errors").inner_text()

    bodies = creates(module_emulator)[before:]
    assert len(bodies) == 1
    sent = bodies[0]["input"]
    audio_uri = sent.pop("input_audio")
    assert audio_uri.startswith(("data:audio/", "http"))
    assert sent == {
        "prompt": prompt,
        "model_version": "melody-large",
        "duration": 35,
        "continuation": True,
        "continuation_start": 1,
        "continuation_end": 4,
        "top_k": 200,
        "top_p": 0.5,
        "temperature": 0.8,
        "classifier_free_guidance": 5,
        "seed": 4242,
        "normalization_strategy": "peak",
        "output_format": "mp3",
        "multi_band_diffusion": True,
    }
    prediction = newest_prediction(module_emulator)
    assert prediction.input_audio_info["duration"] == pytest.approx(6.0, abs=0.1)

    # The result: playable inline, downloadable as mp3, with its facts.
    run_id = wait_result(page)
    assert result_seconds(page) == pytest.approx(35, abs=1.0)
    assert result_duration_text(page) == "0:35"
    assert prediction_link(page) == prediction.id
    facts = page.locator("#result-facts").inner_text()
    assert "4242" in facts and "melody-large" in facts and "mp3" in facts
    download = page.locator("#result-download")
    assert download.is_visible() and "Download .wav" in download.inner_text()  # one click
    page.locator("#logs-accordion").get_by_text("Logs").first.click()
    expect(page.locator("#run-logs textarea")).to_have_value(re.compile(r"Using seed 4242"))
    shot(page, "04-result")

    # The run is in the gallery, playable there too.
    run_card = wait_card(page, prompt, "succeeded", run_id=run_id)
    assert playable_seconds(page, run_card) == pytest.approx(35, abs=1.0)
    assert "melody-large" in run_card.inner_text()
    shot(page, "05-gallery")

    # After a reload: the run, and the visitor's token (kept in their browser only).
    open_page(page, local_app.url)
    assert page.locator("#token-box input").input_value() == VISITOR_TOKEN
    wait_card(page, prompt, "succeeded", run_id=run_id)

    # After the app is killed and started again.
    local_app.restart()
    open_page(page, local_app.url)
    run_card = wait_card(page, prompt, "succeeded", run_id=run_id)
    assert playable_seconds(page, run_card) == pytest.approx(35, abs=1.0)
    shot(page, "06-after-restart")

    # The visitor's token never reached the server's disk or its log.
    assert files_holding(local_app.data_dir, VISITOR_TOKEN) == []
    assert VISITOR_TOKEN not in local_app.log_text()
    page.context.close()


def test_cancel_stops_the_run_mid_way(
    browser: Any,
    local_app: AppProcess,
    module_emulator: Emulator,
) -> None:
    page = visitor(browser, local_app)
    prompt = "A very long ambient drone that we will stop"
    set_prompt(page, prompt)
    with emulator_timing(module_emulator, run_seconds=20.0):
        generate(page)
        wait_status(page, "processing")
        wait_progress(page, above=0)
        prediction_id = status_prediction_id(page)
        assert prediction_id == newest_prediction(module_emulator).id
        page.locator("#cancel-btn").click()
        assert wait_status(page, "canceled") == "canceled"
    assert module_emulator.wait_for(prediction_id, "canceled", timeout=10) == "canceled"
    expect(page.locator("#generate-btn")).to_be_enabled()
    expect(page.locator("#cancel-btn")).to_be_disabled()
    canceled = wait_card(page, prompt, "canceled")
    assert "Canceled" in canceled.inner_text()
    shot(page, "07-canceled")
    page.context.close()


@pytest.mark.parametrize("mode", ["visitor token", "server token"])
def test_a_run_in_flight_when_the_app_is_killed_is_finished_after_restart(
    browser: Any,
    local_app: AppProcess,
    shared_app: AppProcess,
    module_emulator: Emulator,
    mode: str,
) -> None:
    app = local_app if mode == "visitor token" else shared_app
    page = visitor(browser, app)
    prompt = f"Interrupted tango ({mode})"
    set_prompt(page, prompt)
    with emulator_timing(module_emulator, run_seconds=3.0):
        generate(page)
        wait_status(page, "processing")
        prediction_id = status_prediction_id(page)
        assert prediction_id == newest_prediction(module_emulator).id
        app.restart()  # SIGKILL mid-run, then a fresh `python app.py`
    open_page(page, app.url)
    # The server's token resumes it at start; a visitor's token when they come back.
    run_card = wait_card(page, prompt, "succeeded")
    assert module_emulator.status(prediction_id) == "succeeded"
    assert playable_seconds(page, run_card) == pytest.approx(8, abs=0.5)
    page.context.close()


def test_a_refused_combination_shows_its_message_and_sends_nothing(
    browser: Any,
    local_app: AppProcess,
    module_emulator: Emulator,
    clip: Path,
) -> None:
    page = visitor(browser, local_app)
    # Controls that cannot apply are disabled and say why.
    page.locator("#advanced").get_by_text("Advanced").first.click()
    mbd = page.locator("#multi-band-diffusion")
    assert mbd.locator("input").is_disabled()
    assert "only works with the mono models" in mbd.inner_text()
    start = page.locator("#continuation-start")
    assert start.locator("input[type='range']").is_disabled()
    assert "add a clip first" in start.inner_text()

    before = module_emulator.creates
    generate(page)  # no prompt, no clip
    wait_form_errors(page, "Nothing was sent")
    errors = page.locator("#form-errors .ms-error")
    assert "Describe the music you want" in errors.inner_text()

    upload_audio(page, clip)
    choose_radio(page, "audio-use", "continuation")
    set_number(page, "duration-slider", 4)  # shorter than the 6 s of clip it would continue
    set_prompt(page, "keep going")
    generate(page)
    wait_form_errors(page, "Duration")
    text = errors.inner_text()
    assert "In continuation mode, Duration is the total length" in text
    shot(page, "08-refused")
    assert module_emulator.creates == before
    page.context.close()


def test_a_result_used_as_melody_and_then_continued(
    browser: Any,
    local_app: AppProcess,
    module_emulator: Emulator,
) -> None:
    page = visitor(browser, local_app)
    set_prompt(page, "Whistled folk melody, solo")
    set_number(page, "duration-slider", 4)
    generate(page)
    assert wait_status(page, "succeeded", "failed") == "succeeded"
    first = module_emulator.predictions[prediction_link(page)]

    act_and_wait_text(
        page, page.locator("#use-as-melody").click, "#clip-info", "Clip: 4", starts=True
    )
    set_prompt(page, "The same tune as a brass band")
    before = len(creates(module_emulator))
    generate(page)
    assert wait_status(page, "succeeded", "failed") == "succeeded"
    assert prediction_link(page) != first.id
    melody_body = creates(module_emulator)[before]["input"]
    assert melody_body["continuation"] is False
    assert melody_body["input_audio"]
    melody_run = module_emulator.predictions[prediction_link(page)]
    assert melody_run.input_audio_info["duration"] == pytest.approx(4.0, abs=0.1)

    act_and_wait_text(page, page.locator("#continue-this").click, "#form-notice", "continue")
    shot(page, "09-continue-ready")
    before = len(creates(module_emulator))
    generate(page)
    assert wait_status(page, "succeeded", "failed") == "succeeded"
    assert prediction_link(page) != melody_run.id
    continued = creates(module_emulator)[before]["input"]
    assert continued["continuation"] is True
    assert continued["input_audio"]
    assert continued["continuation_start"] == 0
    assert "continuation_end" not in continued  # to the end of the clip
    assert continued["duration"] == 12  # the 4 s clip plus 8 s of new music
    continuation_run = module_emulator.predictions[prediction_link(page)]
    assert continuation_run.input_audio_info["duration"] == pytest.approx(4.0, abs=0.1)
    assert result_seconds(page) == pytest.approx(12, abs=0.5)
    shot(page, "10-continued")
    page.context.close()


def test_a_prompt_with_html_is_shown_as_text(
    browser: Any,
    local_app: AppProcess,
) -> None:
    page = visitor(browser, local_app)
    prompt = '<img src=x onerror="window.__pwned=1"><b>bold</b> ${1+1} & <script>x</script>'
    set_prompt(page, prompt)
    set_number(page, "duration-slider", 2)
    generate(page, shortcut=True)  # Ctrl+Enter in the prompt
    assert wait_status(page, "succeeded", "failed") == "succeeded"
    run_card = wait_card(page, "<b>bold</b>", run_id=wait_result(page))
    assert run_card.locator(".ms-card-prompt").inner_text() == prompt
    assert run_card.locator(".ms-card-prompt img, .ms-card-prompt b").count() == 0
    assert page.evaluate("() => window.__pwned") is None
    shot(page, "11-html-prompt-as-text")
    page.context.close()


def test_history_search_favourite_export_import_and_delete(
    browser: Any,
    local_app: AppProcess,
    module_emulator: Emulator,
    tmp_path: Path,
) -> None:
    page = visitor(browser, local_app)
    runs = {}
    for prompt in ("Marimba loop in seven", "Harpsichord fugue"):
        set_prompt(page, prompt)
        set_number(page, "duration-slider", 2)
        generate(page)
        assert wait_status(page, "succeeded", "failed") == "succeeded"
        runs[prompt] = wait_result(page)
    wait_card(page, "Harpsichord fugue", run_id=runs["Harpsichord fugue"])
    marimba_id = runs["Marimba loop in seven"]

    search = page.locator("#history-search textarea, #history-search input").first
    search.fill("marimba")
    act_and_wait_text(page, lambda: search.press("Enter"), "#history-summary", "matching")
    wait_card(page, "Marimba loop", run_id=marimba_id)
    expect(card(page, "Harpsichord fugue")).to_have_count(0)

    marimba = wait_card(page, "Marimba loop", run_id=marimba_id)
    expect(marimba.locator(".ms-fav")).to_have_count(0)  # so the star below is this click's
    marimba.locator(".card-favourite").click()
    wait_card(page, "Marimba loop", run_id=marimba_id).locator(".ms-fav").wait_for()

    marimba = wait_card(page, "Marimba loop", run_id=marimba_id)
    assert card_run_id(marimba) == marimba_id
    # The export's file is named after the run's short id: this export's link, not an older one.
    this_export = page.locator(f"#export-file a[href*='{marimba_id[:8]}']").first
    marimba.locator(".ms-card-more > summary").click()  # the card's menu
    with page.expect_download() as download_info:
        marimba.locator(".card-export").click()
        this_export.wait_for()
        this_export.click()
    exported = tmp_path / "export.zip"
    download_info.value.save_as(exported)
    import zipfile

    with zipfile.ZipFile(exported) as zf:
        names = zf.namelist()
        audio_name = next(n for n in names if n.endswith(".wav"))
        (tmp_path / audio_name).write_bytes(zf.read(audio_name))
        assert any(n.endswith(".json") for n in names)
    assert probe(tmp_path / audio_name).seconds == pytest.approx(2, abs=0.2)

    marimba = wait_card(page, "Marimba loop", run_id=marimba_id)
    if not marimba.locator(".card-delete").is_visible():
        marimba.locator(".ms-card-more > summary").click()
    mark(page, "#history-summary")
    act_and_wait_text(page, marimba.locator(".card-delete").click, "#undo-text", "Marimba loop")
    shot(page, "12-deleted-with-undo")
    page.wait_for_function(
        "() => (document.querySelector('#history-summary')?.innerText || '').startsWith('0 runs')"
    )
    search.fill("")
    search.press("Enter")
    wait_card(page, "Harpsichord fugue", run_id=runs["Harpsichord fugue"])
    expect(card(page, "Marimba loop")).to_have_count(0)

    # Import of the account's earlier runs, made elsewhere with the same token.
    module_emulator.add_existing_prediction(
        token=VISITOR_TOKEN, input={"prompt": "Made on replicate.com earlier", "duration": 2}
    )
    act_and_wait_text(page, page.locator("#history-import").click, "#history-notice", "Imported")
    wait_card(page, "Made on replicate.com earlier", "succeeded")
    page.context.close()


def test_two_visitors_of_a_shared_deployment_see_only_their_own_runs(
    browser: Any,
    shared_app: AppProcess,
) -> None:
    alice = visitor(browser, shared_app)
    bob = visitor(browser, shared_app)
    # The server has its token: no token field, no banner.
    assert alice.locator("#token-box").count() == 0
    assert alice.locator("#token-banner").count() == 0
    # Import would bring in the server account's runs (everyone's): off, and says why.
    assert alice.locator("#history-import").is_disabled()
    assert "not yours" in alice.locator("#import-off").inner_text()

    for page, prompt in ((alice, "Alice's sea shanty"), (bob, "Bob's breakbeat")):
        set_prompt(page, prompt)
        set_number(page, "duration-slider", 2)
        generate(page)
        assert wait_status(page, "succeeded", "failed") == "succeeded"
    wait_card(alice, "Alice's sea shanty")
    wait_card(bob, "Bob's breakbeat")
    for page in (alice, bob):
        open_page(page, shared_app.url)
    wait_card(alice, "Alice's sea shanty")
    wait_card(bob, "Bob's breakbeat")
    assert card(alice, "Bob's breakbeat").count() == 0
    assert card(bob, "Alice's sea shanty").count() == 0
    assert "1 run" in alice.locator("#history-summary").inner_text()
    shot(alice, "13-shared-visitor-a")
    shot(bob, "14-shared-visitor-b")
    for page in (alice, bob):
        page.context.close()


def test_the_page_fits_a_phone_screen(
    browser: Any,
    shared_app: AppProcess,
) -> None:
    page = visitor(browser, shared_app, width=390, height=844)
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 1
    box = page.locator("#generate-btn").bounding_box()
    assert box is not None and box["width"] > 150
    shot(page, "15-phone")
    page.context.close()
