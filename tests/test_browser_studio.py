"""The page a musician lives in, in a real Chromium at laptop (1366×900) and phone (390×844)
sizes: the prompt and Generate first, one player per take, every result a track with its
actions, the history by kind, a blind A/B, Delete with Undo.

One app (a local install with a server token, runs to the emulator) for the module; the tests
run in file order. Screenshots of every state land in test-artifacts/ (studio-*.png).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.browser_support import (
    AppProcess,
    act_and_wait_text,
    card,
    choose_dropdown,
    generate,
    new_page,
    open_page,
    result_duration_text,
    result_seconds,
    set_number,
    set_prompt,
    shot,
    wait_card,
    wait_result,
    wait_status,
)

# As measured (a 2 s take may be too short for a tempo; its key is always named).
TEMPO_KEY = r"(\d+(\.\d)?bpm-)?[a-g](sharp|flat)?-(major|minor)"

pytestmark = pytest.mark.browser

LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
LONG_MS = 90_000


def in_view(page: Any, selector: str, height: int) -> None:
    """`selector` is on the first screen: wholly inside the viewport without scrolling."""
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not shown"
    assert box["y"] >= 0 and box["y"] + box["height"] <= height, (selector, box)


def make_take(page: Any, prompt: str, seconds: int = 3) -> str:
    set_prompt(page, prompt)
    set_number(page, "duration-slider", seconds)
    generate(page)
    assert wait_status(page, "succeeded", "failed") == "succeeded"
    return wait_result(page)


def open_panel(page: Any, elem_id: str) -> None:
    """Open an accordion (if it is closed)."""
    panel = page.locator(f"#{elem_id}")
    header = panel.locator("button.label-wrap").first
    if "open" not in (header.get_attribute("class") or ""):
        header.click()


def visible_players(page: Any) -> int:
    return sum(page.locator(sel).is_visible() for sel in ("#result-audio", "#run-preview"))


def test_first_screen_one_player_per_take_and_reload_shows_the_latest(
    browser: Any,
    app: AppProcess,
) -> None:
    page = new_page(browser, app.url, **LAPTOP)
    for selector in ("#prompt textarea", "#generate-btn", "#result-audio"):
        in_view(page, selector, LAPTOP["height"])
    # The engine is set (a server token): its section stays closed, out of the way.
    assert not page.locator("#base-url-note").is_visible()
    # Before any run: no leftover "waiting for the model" line.
    assert "waiting" not in page.locator("#run-progress").inner_text()
    shot(page, "studio-01-first-screen-laptop", full_page=False)

    run_id = make_take(page, "Lofi drums with warm bass")
    # One player: the result, where the take was made; it plays the whole take.
    assert visible_players(page) == 1
    assert result_duration_text(page) == "0:03"
    assert result_seconds(page) == pytest.approx(3, abs=0.1)
    elapsed = page.locator("#run-status .ms-elapsed").inner_text()
    assert float(elapsed.split()[0]) > 0, elapsed
    facts = page.locator("#result-facts").inner_text()
    assert "Take · 3 s" in facts and "stereo-melody-large" in facts
    assert re.search(r"Seed\s+\d+", facts), facts
    # Runs went to the emulator: no Replicate price is claimed, and the run's id is only in
    # its Details.
    assert "nothing from Replicate" in facts and run_id not in facts
    assert "on Replicate" not in page.locator("#cost-estimate").inner_text()
    shot(page, "studio-02-take-laptop", full_page=False)

    # A reload shows the visitor's latest result in the same place.
    open_page(page, app.url)
    page.wait_for_function(
        "(id) => document.querySelector('#result-facts .ms-facts')?.dataset.run === id",
        arg=run_id,
    )
    assert visible_players(page) == 1
    page.context.close()

    phone = new_page(browser, app.url, **PHONE)
    page_width = phone.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert page_width <= 1
    phone.wait_for_function(
        "(id) => document.querySelector('#result-facts .ms-facts')?.dataset.run === id",
        arg=run_id,
    )
    for selector in ("#prompt textarea", "#generate-btn", "#result-audio"):
        in_view(phone, selector, PHONE["height"])
    shot(phone, "studio-03-first-screen-phone", full_page=False)
    # Generate stays reachable further down the page (a bar at the bottom of the screen).
    phone.locator("#history-title").scroll_into_view_if_needed()
    in_view(phone, "#generate-btn", PHONE["height"])
    label = phone.locator("#history-favourites label").first
    assert label.evaluate("(el) => el.scrollWidth <= el.clientWidth + 1")  # not clipped
    shot(phone, "studio-04-phone-scrolled", full_page=False)
    phone.context.close()


def test_each_kind_of_result_has_its_card_badge(
    browser: Any,
    app: AppProcess,
) -> None:
    page = new_page(browser, app.url, width=1366, height=1400)
    take_id = make_take(page, "Kinds: a plain take")

    # A piece: the track's Extend… opens the panel for the take shown.
    page.locator("#track-extend").click()
    page.wait_for_function(
        "() => (document.querySelector('#extend-source')?.innerText || '').includes('Extends')"
    )
    set_number(page, "extend-seconds", 3)
    act_and_wait_text(
        page, page.locator("#extend-btn").click, "#extend-status", "Done", timeout_ms=LONG_MS
    )
    # The piece is the selected result: its parts are marked on the track.
    page.wait_for_function("() => document.querySelectorAll('#track-marks .ms-part').length === 2")
    assert "Piece · 2 parts" in page.locator("#result-facts").inner_text()
    shot(page, "studio-05-piece-in-track", full_page=False)

    # A loop, from the form's prompt.
    set_prompt(page, "Kinds: boom bap drums")
    open_panel(page, "loop-box")
    set_number(page, "loop-bpm", 120)
    set_number(page, "loop-bars", 2)
    act_and_wait_text(
        page,
        page.locator("#loop-btn").click,
        "#loop-status",
        "Done",
        timeout_ms=LONG_MS,
    )
    page.wait_for_function(
        "() => (document.querySelector('#result-facts')?.innerText || '').includes('Loop ·')"
    )

    # Variations: two takes at once.
    set_prompt(page, "Kinds: bossa nova guitar")
    open_panel(page, "variations-panel")
    set_number(page, "variations-n", 2)
    act_and_wait_text(
        page,
        page.locator("#variations-btn").click,
        "#variations-status",
        "2 takes made",
        timeout_ms=LONG_MS,
    )

    badges = {
        "Kinds: a plain take": r"Take · 3 s",
        "Kinds: boom bap drums": r"Loop · 120 BPM · 2 bars",
        "Kinds: bossa nova guitar": r"Variations · 2 takes",
    }
    for prompt, badge in badges.items():
        wait_card(page, prompt, "succeeded")
        kinds = card(page, prompt).locator(".ms-kind").all_inner_texts()
        assert badge in kinds, (prompt, kinds)
    piece = card(page, "Kinds: a plain take").filter(has_text="Piece")
    assert re.fullmatch(r"Piece · 2 parts · 6 s", piece.locator(".ms-kind").inner_text())
    group = wait_card(page, "Kinds: bossa nova guitar", "succeeded")
    takes = group.locator(".ms-takes audio")
    assert takes.count() == 2 and all(t.get_attribute("src") for t in takes.all())

    cards = page.locator("#history-cards .ms-card")
    text = page.locator("#history-cards").inner_text()
    for internal in ("loop-source", "extend", "variation "):
        assert internal not in text
    assert take_id not in text
    for i in range(cards.count()):
        actions = cards.nth(i).locator(".ms-card-actions button, .ms-card-more > summary")
        visible = [b for b in actions.all() if b.is_visible()]
        assert len(visible) <= 3, [b.inner_text() for b in visible]
    page.locator("#history-title").scroll_into_view_if_needed()
    shot(page, "studio-06-history-by-kind")

    # The pickers read titles, kinds and times: never internal names or ids.
    open_panel(page, "compare-box")
    page.locator("#compare-a input").click()
    options = page.locator("ul[role='listbox'] li").all_inner_texts()
    assert options and not any("loop-source" in o or take_id[:6] in o for o in options)
    page.keyboard.press("Escape")
    page.context.close()


def ffprobe_format(path: Path) -> str:
    return subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=format_name", "-of", "csv=p=0", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_one_click_download_gives_each_format(
    browser: Any,
    app: AppProcess,
    tmp_path: Path,
) -> None:
    page = new_page(browser, app.url, **LAPTOP)
    make_take(page, "Warm Rhodes chords", seconds=2)
    button = page.locator("#result-download")
    for fmt, decoded_as in (("wav", "wav"), ("mp3", "mp3"), ("flac", "flac")):
        page.locator(f"#track-format input[value='{fmt}']").check()
        page.wait_for_function(
            "(label) => document.querySelector('#result-download')?.innerText.includes(label)",
            arg=f"Download .{fmt}",
        )
        with page.expect_download() as download:
            button.click()
        name = download.value.suggested_filename
        # Prompt words, the measured tempo and key, the seed, the day.
        assert re.fullmatch(
            rf"warm-rhodes-chords-{TEMPO_KEY}-seed\d+-\d{{4}}-\d\d-\d\d\.{fmt}", name
        ), name
        saved = tmp_path / name
        download.value.save_as(saved)
        assert decoded_as in ffprobe_format(saved).split(",")
    shot(page, "studio-07-download", full_page=False)
    page.context.close()


def test_blind_ab_tells_nothing_before_reveal(
    browser: Any,
    app: AppProcess,
) -> None:
    page = new_page(browser, app.url, width=1366, height=1400)
    ids = [make_take(page, prompt, seconds=2) for prompt in ("Blind one", "Blind two")]
    open_panel(page, "compare-box")
    choose_dropdown(page, "compare-a", "Blind one")
    choose_dropdown(page, "compare-b", "Blind two")
    page.locator("#compare-blind input[type='checkbox']").check()
    act_and_wait_text(page, page.locator("#compare-load").click, "#compare-facts", "Blind")
    page.locator("#compare-player audio[data-slot='Y']").wait_for(state="attached")
    hidden = (
        page.locator("#compare-player").inner_html() + page.locator("#compare-facts").inner_html()
    )
    for secret in (*ids, "Blind one", "Blind two", "dB"):
        assert secret not in hidden, secret
    assert page.locator("#compare-keep-1").inner_text() == "Keep X"
    shot(page, "studio-08-blind-before-reveal", full_page=False)

    revealed = act_and_wait_text(
        page, page.locator("#compare-reveal").click, "#compare-facts", "Blind one"
    )
    assert "Blind two" in revealed and "X =" in revealed and "Y =" in revealed
    shot(page, "studio-09-blind-revealed", full_page=False)
    page.context.close()


def test_delete_is_undone(
    browser: Any,
    app: AppProcess,
) -> None:
    page = new_page(browser, app.url, **PHONE)
    run_id = make_take(page, "Delete me softly", seconds=2)
    wait_card(page, "Delete me softly", "succeeded", run_id=run_id)

    act_and_wait_text(page, page.locator("#track-delete").click, "#undo-text", "Delete me softly")
    page.locator(f"#card-{run_id}").wait_for(state="detached")
    page.wait_for_function(  # the track moved off it
        "(id) => document.querySelector('#result-facts .ms-facts')?.dataset.run !== id",
        arg=run_id,
    )
    shot(page, "studio-10-deleted-undo-bar", full_page=False)

    page.locator("#undo-delete").click()
    wait_card(page, "Delete me softly", "succeeded", run_id=run_id)
    page.wait_for_function(
        "(id) => document.querySelector('#result-facts .ms-facts')?.dataset.run === id",
        arg=run_id,
    )
    assert not page.locator("#undo-bar").is_visible()
    # Still there after a reload: the delete never happened.
    open_page(page, app.url)
    wait_card(page, "Delete me softly", "succeeded", run_id=run_id)
    shot(page, "studio-11-undone", full_page=False)
    page.context.close()


def test_a_take_costs_the_server_two_events(browser: Any, app: AppProcess) -> None:
    """The run's own stream brings the history's new card; the selected result's panels (track,
    stems, Extend, Arrange) answer in one event: each more would be a queue round of the
    server's CPU after every take."""
    page = new_page(browser, app.url)

    def take_shown(prompt: str) -> None:
        run_id = make_take(page, prompt, seconds=2)
        wait_card(page, prompt, "succeeded", run_id=run_id)
        page.wait_for_function(  # the track shows the new take
            "(id) => document.querySelector('#result-facts .ms-facts')?.dataset.run === id",
            arg=run_id,
        )

    take_shown("One take before counting")  # the page's own load events are over by now
    joins: list[str] = []
    page.on("request", lambda r: joins.append(r.url) if "/queue/join" in r.url else None)
    take_shown("Two events a take")
    assert len(joins) == 2, joins
