"""From take to track in the running app: `/generate` reports tempo and key, `/stems` and
`/midi` through gradio_client, and the mixer's mute and solo in Chromium (laptop and phone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pretty_midi
import pytest
from gradio_client import Client

from services.compose import audio_ops
from tests.browser_support import (
    AppProcess,
    new_page,
    shot,
)

pytest.importorskip("demucs")
pytest.importorskip("basic_pitch")

SOURCES = ["drums", "bass", "other", "vocals"]  # demucs_unittest's


@pytest.fixture(scope="module")
def app_settings() -> dict[str, str]:
    return {"MUSICGEN_STEMS_MODEL": "demucs_unittest"}


@pytest.fixture(scope="module")
def split_take(app: AppProcess) -> dict[str, Any]:
    """One take made through /generate and split through /stems."""
    client = Client(app.url, verbose=False)
    audio, record = client.predict(
        prompt="warm house groove", duration=3, seed=99, api_name="/generate"
    )
    stems, split = client.predict(run_id=record["library_id"], api_name="/stems")
    return {"client": client, "audio": audio, "record": record, "stems": stems, "split": split}


def test_generate_reports_tempo_and_key_and_stems_come_back_as_long_as_the_take(
    split_take: dict[str, Any],
) -> None:
    record, split = split_take["record"], split_take["split"]
    assert record["status"] == "succeeded", record
    assert record["bpm"] == pytest.approx(120.0, abs=0.5)  # the emulator's pulse
    assert record["key"] and record["key"].endswith(("major", "minor"))
    assert [s["name"] for s in split["stems"]] == SOURCES
    assert split["stems_model"] == "demucs_unittest" and split["bpm"] == record["bpm"]
    mix = audio_ops.load(Path(split_take["audio"]))
    assert len(split_take["stems"]) == len(SOURCES)
    for path in split_take["stems"]:
        assert audio_ops.load(Path(path)).frame_count() == mix.frame_count()


def test_midi_of_a_stem_carries_the_measured_tempo(split_take: dict[str, Any]) -> None:
    client, record = split_take["client"], split_take["record"]
    mid, made = client.predict(run_id=record["library_id"], stem="other", api_name="/midi")
    assert made["source"] == "other" and made["notes"] >= 0
    tempo = pretty_midi.PrettyMIDI(mid).get_tempo_changes()[1][0]
    assert tempo == pytest.approx(record["bpm"], abs=0.01)
    with pytest.raises(Exception, match="no stem 'guitar'"):
        client.predict(run_id=record["library_id"], stem="guitar", api_name="/midi")
    with pytest.raises(Exception, match="run_id is empty"):
        client.predict(run_id=" ", api_name="/stems")


def muted(page: Any) -> dict[str, bool]:
    return page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('#stem-mixer audio')]"
        ".map((a) => [a.dataset.stem, a.muted]))"
    )


@pytest.mark.browser
@pytest.mark.parametrize(("width", "height", "name"), [(1366, 900, "laptop"), (390, 844, "phone")])
def test_the_mixer_mutes_and_solos_stems(
    split_take: dict[str, Any],
    app: AppProcess,
    browser: Any,
    width: int,
    height: int,
    name: str,
) -> None:
    run_id = split_take["record"]["library_id"]
    page = new_page(browser, app.url, width=width, height=height)
    page.locator(f"#card-{run_id} .ms-card-more > summary").click()  # the card's menu
    page.locator(f"#card-{run_id} .card-tracks").click()
    page.wait_for_selector("#stem-mixer .ms-stem audio", state="attached")
    assert sorted(muted(page)) == sorted(SOURCES)
    assert not any(muted(page).values())

    page.locator('#stem-mixer .ms-stem[data-stem="drums"] .ms-mute').click()
    assert muted(page) == {"drums": True, "bass": False, "other": False, "vocals": False}
    page.locator('#stem-mixer .ms-stem[data-stem="bass"] .ms-solo').click()
    assert muted(page) == {"drums": True, "bass": False, "other": True, "vocals": True}
    page.locator("#stem-mixer .ms-mix-play").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#stem-mixer audio')].every((a) => !a.paused)"
    )
    page.locator("#track-tools").scroll_into_view_if_needed()
    shot(page, f"track-tools-mixer-{name}")
    page.context.close()


@pytest.mark.browser
def test_the_card_shows_tempo_and_key_and_the_history_finds_runs_by_them(
    split_take: dict[str, Any],
    app: AppProcess,
    browser: Any,
) -> None:
    record = split_take["record"]
    page = new_page(browser, app.url, width=1366, height=900)
    card = page.locator(f"#card-{record['library_id']} .ms-card-meta")
    assert f"{record['bpm']:.1f} BPM" in card.inner_text()
    assert record["key"] in card.inner_text()
    summary = page.locator("#history-summary")
    search = page.locator("#history-search textarea, #history-search input").first
    for text, found in (("118-122 bpm", "1 run"), ("60 bpm", "0 runs"), (record["key"], "1 run")):
        search.fill(text)
        search.press("Enter")
        page.wait_for_function(
            "([want, text]) => (document.querySelector('#history-summary')?.innerText || '')"
            ".startsWith(want + ' matching') && document.querySelector('#history-summary')"
            ".innerText.includes(text)",
            arg=[found, text],
        )
    assert summary.inner_text().startswith("1 run")
    page.context.close()
