"""Loops, downloads in any format and A/B compare in a real Chromium, against `python app.py`
wired to the emulator. Screenshots of the loop and compare views land in test-artifacts/."""

from __future__ import annotations

import re
from collections.abc import Iterator
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
    app_env,
    browser,  # noqa: F401 - fixture
    choose_dropdown,
    emulator_timing,
    generate,
    mark,
    marked_log,
    module_emulator,  # noqa: F401 - fixture
    new_page,
    playable_seconds,
    result_seconds,
    running_app,
    set_number,
    set_prompt,
    shot,
    wait_card,
    wait_result,
)
from tests.emulator import Emulator

pytestmark = pytest.mark.browser

SERVER_TOKEN = (
    "r8_" + "ComposeServerTok0123456789abcdefghijklmn"
)  # fake; split so secret scanners skip it
LOOP_STATUS = "#loop-status .ms-status"
LOOP_PROGRESS = "#loop-progress .ms-progress"
COMPARE_NOTICE = "#compare-notice"
ACTIVE = "#compare-player audio[data-active='1']"

# How a download's name says the measured key and tempo ("eflat-major", "119.7bpm-c-major").
KEY = r"[a-g](sharp|flat)?-(major|minor)"
TEMPO_KEY = rf"\d+(\.\d)?bpm-{KEY}"


@pytest.fixture(scope="module")
def emulator(module_emulator: Emulator) -> Emulator:  # noqa: F811
    module_emulator.configure(tokens=[SERVER_TOKEN])
    return module_emulator


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compose-browser")


@pytest.fixture(scope="module")
def app(emulator: Emulator, data_dir: Path) -> Iterator[AppProcess]:
    """A local install with a server-wide token (no token to paste)."""
    env = app_env(
        emulator,
        data_dir / "data",
        REPLICATE_API_TOKEN=SERVER_TOKEN,
        GRADIO_TEMP_DIR=str(data_dir / "gr"),
    )
    with running_app(env, data_dir / "app.log") as running:
        yield running


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


def download(page: Any, prefix: str, fmt: str, tmp_path: Path) -> Path:
    """Press the `fmt` button of a result, wait for this format's file, fetch it as the
    browser would; returns the file saved under its own name."""
    link = f"#{prefix}-format-file a"
    mark(page, f"#{prefix}-format-file")
    page.locator(f"#{prefix}-as-{fmt}").click()
    href = page.wait_for_function(
        f"""(arg) => {{ {CHANGED_JS}
        if (!changed(arg.box)) return false;
        const a = document.querySelector(arg.link);
        const href = a?.getAttribute('href') || '';
        return href.endsWith('.' + arg.fmt) ? href : false;
        }}""",
        arg={"box": f"#{prefix}-format-file", "link": link, "fmt": fmt},
    ).json_value()
    answer = page.request.get(href if href.startswith("http") else page.url + href.lstrip("/"))
    assert answer.ok, answer.status
    dest = tmp_path / Path(href.split("?")[0]).name
    dest.write_bytes(answer.body())
    return dest


def test_a_loop_is_made_with_progress_plays_looped_and_downloads(
    browser: Any,  # noqa: F811
    app: AppProcess,
    emulator: Emulator,
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
    with emulator_timing(emulator, run_seconds=2.0):
        mark(page, LOOP_STATUS, LOOP_PROGRESS, "#loop-player")
        page.locator("#loop-btn").click()
        status = wait_final(page, LOOP_STATUS)
    assert status == "succeeded", page.locator("#loop-status").inner_text()
    moving = [int(v or 0) for v in marked_log(page, LOOP_PROGRESS)]
    assert any(0 < v < 100 for v in moving), f"no progress while the take was made: {moving}"

    loop_id = page.locator("#loop-facts .ms-facts").get_attribute("data-run")
    player = page.locator(f"#loop-player audio[data-run='{loop_id}']")
    assert player.get_attribute("loop") is not None
    assert page.evaluate("(sel) => document.querySelector(sel).loop", "#loop-player audio")
    src = player.get_attribute("src") or ""
    assert "120bpm-2bars" in src
    seconds = float(page.evaluate(AUDIO_DURATION_JS, src))
    assert seconds == pytest.approx(4.0, abs=0.01)
    assert "120 BPM" in page.locator("#loop-facts").inner_text()
    shot(page, "compose-01-loop")

    # In the history once: the loop, not its raw take.
    card = wait_card(page, "Dusty boom bap drums, 120 bpm", "succeeded", run_id=loop_id)
    assert card.is_visible()
    assert page.locator("#history-cards .ms-card", has_text="Dusty boom bap drums").count() == 1

    mp3 = download(page, "loop", "mp3", tmp_path)
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


def test_the_result_downloads_as_wav_mp3_and_flac(
    browser: Any,  # noqa: F811
    app: AppProcess,
    tmp_path: Path,
) -> None:
    page = new_page(browser, app.url)
    set_prompt(page, "Warm Rhodes chords")
    set_number(page, "duration-slider", 3)
    generate(page)
    wait_result(page)
    length = result_seconds(page)
    for fmt in ("wav", "mp3", "flac"):
        path = download(page, "result", fmt, tmp_path)
        # Prompt words, the measured tempo and key, the seed, the day.
        assert re.fullmatch(
            rf"warm-rhodes-chords-{TEMPO_KEY}-seed\d+-\d{{4}}-\d\d-\d\d\.{fmt}", path.name
        ), path.name
        assert audio_ops.seconds(audio_ops.load(path)) == pytest.approx(length, abs=0.05)

    # The same from the history: pick the entry, press flac.
    open_panel(page, "formats-box", "Download a result as")
    choose_dropdown(page, "formats-entry", "Warm Rhodes chords")
    (tmp_path / "entry").mkdir()
    path = download(page, "entry", "flac", tmp_path / "entry")
    assert re.match(rf"warm-rhodes-chords-{TEMPO_KEY}-seed", path.name), path.name
    assert audio_ops.seconds(audio_ops.load(path)) == pytest.approx(length, abs=0.05)


def test_cancelling_a_loop_stops_its_take(
    browser: Any,  # noqa: F811
    app: AppProcess,
    emulator: Emulator,
) -> None:
    page = new_page(browser, app.url)
    set_prompt(page, "Endless ambient drone")
    open_panel(page, "loop-box", "Loop: a seamless loop")
    with emulator_timing(emulator, run_seconds=60.0):
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
        (p for p in emulator.predictions.values() if "Endless ambient drone" in p.input["prompt"]),
        key=lambda p: p.created,
    )
    assert emulator.status(take.id) == "canceled"
    wait_card(page, "Endless ambient drone, 120 bpm", "canceled")


def test_ab_compare_switches_in_place_matches_loudness_hides_and_keeps(
    browser: Any,  # noqa: F811
    app: AppProcess,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    # Two takes 6 dB apart: one made by the model, one the same take turned down.
    loud_file, loud = Client(app.url, verbose=False).predict(
        prompt="Loud synth pads", duration=6, seed=11, api_name="/generate"
    )
    quiet_file = tmp_path / "quiet.wav"
    audio_ops.export(audio_ops.load(Path(loud_file)).apply_gain(-6.0), quiet_file, "wav")
    quiet = Library(data_dir / "data").add_run(
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
        ".map((a) => [a.dataset.run, a.volume]))"
    )
    assert volumes[loud["library_id"]] == pytest.approx(10 ** (-matched_db / 20), abs=0.01)
    assert volumes[quiet.id] == 1.0

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

    # Blind: X and Y, nothing says which is which until Reveal.
    page.locator("#compare-blind input[type='checkbox']").check()
    mark(page, "#compare-player")
    page.locator("#compare-load").click()
    page.wait_for_function(
        f"""() => {{ {CHANGED_JS}
        return changed('#compare-player') &&
          !!document.querySelector('#compare-player .ms-ab[data-blind="1"]'); }}"""
    )
    facts = page.locator("#compare-player .ms-ab-facts")
    assert "synth pads" not in facts.inner_text().lower()
    assert [b.inner_text() for b in page.locator("#compare-player .ms-ab-pick").all()] == [
        "X",
        "Y",
    ]
    assert page.locator("#compare-keep-1").inner_text() == "Keep X"
    runs = page.evaluate(
        "() => [...document.querySelectorAll('#compare-player audio')].map((a) => a.dataset.run)"
    )
    assert runs == ["", ""]
    shot(page, "compose-03-compare-blind")
    page.locator("#compare-player .ms-ab-reveal").click()
    revealed = page.locator("#compare-player .ms-ab-facts [data-slot='X'] .ms-ab-secret")
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
    assert Library(data_dir / "data").get(winner).favourite
    loser = quiet.id if x_is_loud else loud["library_id"]
    assert not Library(data_dir / "data").get(loser).favourite
