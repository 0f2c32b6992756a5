"""Loops, downloads in any format and A/B compare in a real Chromium, against `python app.py`
wired to the emulator. Screenshots of the loop and compare views land in test-artifacts/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client

from services.compose import audio_ops
from services.library import Library
from tests.browser_support import (
    AUDIO_DURATION_JS,
    CHANGED_JS,
    AppProcess,
    choose_dropdown,
    emulator_timing,
    mark,
    marked_log,
    new_page,
    playable_seconds,
    set_number,
    set_prompt,
    shot,
    wait_card,
)
from tests.emulator import Emulator

pytestmark = pytest.mark.browser

LOOP_STATUS = "#loop-status .ms-status"
LOOP_PROGRESS = "#loop-progress .ms-progress"
COMPARE_NOTICE = "#compare-notice"
ACTIVE = "#compare-player audio[data-active='1']"

# How a download's name says the measured key and tempo ("eflat-major", "119.7bpm-c-major").
KEY = r"[a-g](sharp|flat)?-(major|minor)"


def open_panel(page: Any, elem_id: str, title: str) -> None:
    page.locator(f"#{elem_id}").get_by_text(title).first.click()


def wait_final(page: Any, selector: str, timeout_ms: int = 120_000) -> str:
    """Wait until the status marked as `selector` changed and shows a final status."""
    return page.wait_for_function(
        f"""(sel) => {{ {CHANGED_JS}
        if (!changed(sel)) return false;
        const s = document.querySelector(sel)?.dataset.status;
        return ['succeeded', 'failed', 'canceled', 'aborted', 'lost'].includes(s) ? s : false;
        }}""",
        arg=selector,
        timeout=timeout_ms,
    ).json_value()


def download(page: Any, fmt: str, tmp_path: Path) -> Path:
    """One click on the track's Download in format `fmt`; the file saved under its name."""
    page.locator(f"#track-format input[value='{fmt}']").check()
    page.wait_for_function(
        "(label) => document.querySelector('#result-download')?.innerText.includes(label)",
        arg=f"Download .{fmt}",
    )
    with page.expect_download() as saved:
        page.locator("#result-download").click()
    dest = tmp_path / saved.value.suggested_filename
    saved.value.save_as(dest)
    return dest


def test_a_loop_is_made_with_progress_plays_looped_and_downloads(
    browser: Any,
    app: AppProcess,
    module_emulator: Emulator,
    tmp_path: Path,
) -> None:
    page = new_page(browser, app.url)
    set_prompt(page, "Dusty boom bap drums")
    open_panel(page, "loop-box", "Loop: a seamless loop")
    set_number(page, "loop-bpm", 120)
    set_number(page, "loop-bars", 2)
    page.wait_for_function(
        "() => document.querySelector('#loop-plan [data-seconds]')?.dataset.seconds === '4.000'"
    )
    with emulator_timing(module_emulator, run_seconds=2.0):
        mark(page, LOOP_STATUS, LOOP_PROGRESS, "#loop-player")
        page.locator("#loop-btn").click()
        status = wait_final(page, LOOP_STATUS)
    assert status == "succeeded", page.locator("#loop-status").inner_text()
    moving = [int(v or 0) for v in marked_log(page, LOOP_PROGRESS)]
    assert any(0 < v < 100 for v in moving), f"no progress while the take was made: {moving}"

    # The loop is the selected result: it plays, looping, in the track; nothing else plays it.
    page.wait_for_function(
        "() => (document.querySelector('#result-facts')?.innerText || '').includes('Loop ·')"
    )
    facts = page.locator("#result-facts .ms-facts")
    loop_id = facts.get_attribute("data-run")
    assert "Loop · 120 BPM · 2 bars" in page.locator("#result-facts").inner_text()
    # (Its playing round in the track is not waited for here: headless playback timed out in the
    # serial browser run; the wrap itself is tested on the audio in test_compose_loop.)
    seconds = float(page.evaluate(AUDIO_DURATION_JS, facts.get_attribute("data-audio")))
    assert seconds == pytest.approx(4.0, abs=0.01)
    assert page.locator("#track-marks .ms-part").count() == 2  # its bars, marked
    shot(page, "compose-01-loop")

    # In the history once: the loop, not its raw take.
    card = wait_card(page, "Dusty boom bap drums, 120 bpm", "succeeded", run_id=loop_id)
    assert card.is_visible()
    assert page.locator("#history-cards .ms-card", has_text="Dusty boom bap drums").count() == 1

    mp3 = download(page, "mp3", tmp_path)
    # The loop's tempo as asked and bars, its measured key, the seed and the day.
    assert re.fullmatch(
        rf"dusty-boom-bap-drums-loop-120bpm-2bars-{KEY}"
        r"-seed\d+-\d{4}-\d\d-\d\d\.mp3",
        mp3.name,
    ), mp3.name
    assert audio_ops.seconds(audio_ops.load(mp3)) == pytest.approx(4.0, abs=0.05)

    # After a restart the loop is still in the history, once, and still plays its 4 s.
    app.restart()
    page = new_page(browser, app.url)
    card = wait_card(page, "Dusty boom bap drums, 120 bpm", "succeeded", run_id=loop_id)
    assert page.locator("#history-cards .ms-card", has_text="Dusty boom bap drums").count() == 1
    assert playable_seconds(page, card) == pytest.approx(4.0, abs=0.01)
    assert card.locator("audio.ms-card-audio").get_attribute("loop") is not None  # plays round


def test_cancelling_a_loop_stops_its_take(
    browser: Any,
    app: AppProcess,
    module_emulator: Emulator,
) -> None:
    page = new_page(browser, app.url)
    set_prompt(page, "Endless ambient drone")
    open_panel(page, "loop-box", "Loop: a seamless loop")
    with emulator_timing(module_emulator, run_seconds=60.0):
        mark(page, LOOP_STATUS)
        page.locator("#loop-btn").click()
        page.wait_for_function(
            f"""(sel) => {{ {CHANGED_JS}
            const status = document.querySelector(sel)?.dataset.status;
            return changed(sel) && status === 'processing'; }}""",
            arg=LOOP_STATUS,
        )
        mark(page, LOOP_STATUS)
        page.locator("#loop-cancel").click()
        assert wait_final(page, LOOP_STATUS, timeout_ms=30_000) == "canceled"
    take = max(
        (
            p
            for p in module_emulator.predictions.values()
            if "Endless ambient drone" in p.input["prompt"]
        ),
        key=lambda p: p.created,
    )
    assert module_emulator.status(take.id) == "canceled"
    wait_card(page, "Endless ambient drone, 120 bpm", "canceled")


def test_ab_compare_switches_in_place_matches_loudness_hides_and_keeps(
    browser: Any,
    app: AppProcess,
    tmp_path: Path,
) -> None:
    # Two takes 6 dB apart: one made by the model, one the same take turned down.
    loud_file, loud = Client(app.url, verbose=False).predict(
        prompt="Loud synth pads", duration=6, seed=11, api_name="/generate"
    )
    quiet_file = tmp_path / "quiet.wav"
    audio_ops.export(audio_ops.load(Path(loud_file)).apply_gain(-6.0), quiet_file, "wav")
    quiet = Library(app.data_dir).add_run(
        None, {"prompt": "Quiet synth pads"}, status="succeeded", audio_src=quiet_file,
        audio_format="wav", audio_seconds=6.0, seed=12,
    )  # fmt: skip

    page = new_page(browser, app.url)
    open_panel(page, "compare-box", "Compare A/B")
    choose_dropdown(page, "compare-a", "Loud synth pads")
    choose_dropdown(page, "compare-b", "Quiet synth pads")
    mark(page, COMPARE_NOTICE, "#compare-player")
    page.locator("#compare-load").click()
    notice = page.wait_for_function(
        f"""(sel) => {{ {CHANGED_JS}
        const text = document.querySelector(sel)?.innerText || '';
        return changed(sel) && text.includes('quieter') ? text : false; }}""",
        arg=COMPARE_NOTICE,
    ).json_value()
    matched_db = float(re.search(r"([\d.]+) dB quieter", notice).group(1))
    assert matched_db == pytest.approx(6.0, abs=0.3)
    volumes = page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('#compare-player audio')]"
        ".map((a) => [a.dataset.slot, a.volume]))"
    )
    runs = page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('#compare-facts [data-slot]')]"
        ".map((row) => [row.dataset.slot, row.dataset.run]))"
    )
    assert runs == {"A": loud["library_id"], "B": quiet.id}
    assert volumes["A"] == pytest.approx(10 ** (-matched_db / 20), abs=0.01)
    assert volumes["B"] == 1.0

    # Play, then switch A -> B while playing: same position, the other element sounds.
    page.locator("#compare-player .ms-ab-play").click()
    page.wait_for_function(f'() => document.querySelector("{ACTIVE}")?.currentTime > 1')
    switch = page.evaluate(
        """(active) => {
        const before = document.querySelector(active);
        const at = before.currentTime;
        document.querySelector('#compare-player .ms-ab-pick[data-slot="B"]').click();
        const after = document.querySelector(active);
        return {at, now: after.currentTime, from: before.dataset.slot, to: after.dataset.slot,
                fromMuted: before.muted, toMuted: after.muted, playing: !after.paused};
        }""",
        ACTIVE,
    )
    assert switch["from"] == "A" and switch["to"] == "B"
    assert abs(switch["now"] - switch["at"]) <= 0.1, switch
    assert switch["fromMuted"] and not switch["toMuted"] and switch["playing"]
    shot(page, "compose-02-compare")

    # Paused, switched back by a click: the position is kept.
    page.locator("#compare-player .ms-ab-play").click()
    page.wait_for_function(f'() => document.querySelector("{ACTIVE}").paused')
    at = page.evaluate(f'() => document.querySelector("{ACTIVE}").currentTime')
    page.locator("#compare-player .ms-ab-pick[data-slot='A']").click()
    now = page.evaluate(
        f'() => [document.querySelector("{ACTIVE}").dataset.slot, '
        f'document.querySelector("{ACTIVE}").currentTime]'
    )
    assert now[0] == "A" and abs(now[1] - at) <= 0.1, (at, now)

    # Blind: X and Y, nothing on the page says which is which until Reveal.
    page.locator("#compare-blind input[type='checkbox']").check()
    mark(page, "#compare-facts")
    page.locator("#compare-load").click()
    page.wait_for_function(
        f"""() => {{ {CHANGED_JS}
        return changed('#compare-facts') &&
          (document.querySelector('#compare-facts')?.innerText || '').includes('Blind'); }}"""
    )
    secret = (
        page.locator("#compare-player").inner_html() + page.locator("#compare-facts").inner_html()
    )
    for tell in ("synth pads", loud["library_id"], quiet.id, "data-run"):
        assert tell not in secret.lower(), tell
    assert [b.inner_text() for b in page.locator("#compare-player .ms-ab-pick").all()] == [
        "X",
        "Y",
    ]
    assert page.locator("#compare-keep-1").inner_text() == "Keep X"
    shot(page, "compose-03-compare-blind")
    page.locator("#compare-reveal").click()
    revealed = page.locator("#compare-facts [data-slot='X']")
    revealed.wait_for(state="visible")
    x_is_loud = "Loud synth pads" in revealed.inner_text()
    winner = loud["library_id"] if x_is_loud else quiet.id

    # Keep X: it becomes a favourite, shown in the history.
    mark(page, COMPARE_NOTICE)
    page.locator("#compare-keep-1").click()
    page.wait_for_function(
        f"""(sel) => {{ {CHANGED_JS}
        return changed(sel) && document.querySelector(sel).innerText.includes('Kept X'); }}""",
        arg=COMPARE_NOTICE,
    )
    page.locator(f"#card-{winner} .ms-fav").wait_for()
    assert Library(app.data_dir).get(winner).favourite
    loser = quiet.id if x_is_loud else loud["library_id"]
    assert not Library(app.data_dir).get(loser).favourite
