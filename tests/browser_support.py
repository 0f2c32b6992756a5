"""Shared pieces of the browser and Gradio API tests: the app as a real subprocess, Chromium,
an emulator that outlives one test, screenshots, and helpers that drive the page.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.emulator import Emulator, EmulatorConfig, run_emulator

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    # Let the players load and play without a user gesture or a sound card.
    "--autoplay-policy=no-user-gesture-required",
]
APP_START_TIMEOUT_S = 60.0
UI_TIMEOUT_MS = 30_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppProcess:
    """`python app.py` in its own process, pointed at the emulator; can be restarted."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.env = {**os.environ, **env, "GRADIO_SERVER_PORT": str(self.port)}
        self.env.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> AppProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "app.py"],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        give_up = time.monotonic() + APP_START_TIMEOUT_S
        while time.monotonic() < give_up:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited early; see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url, timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"app.py did not answer on {self.url}; see {self.log_path}")

    def stop(self) -> None:
        """Stop the app like a crash would (SIGKILL): nothing gets a chance to tidy up."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def running_app(env: dict[str, str], log_path: Path) -> Iterator[AppProcess]:
    app = AppProcess(env, log_path).start()
    try:
        yield app
    finally:
        app.stop()


def app_env(emulator: Emulator, data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for an app wired to the emulator; no server token unless given."""
    env = {
        "REPLICATE_BASE_URL": emulator.base_url,
        "MUSICGEN_DATA_DIR": str(data_dir),
        "REPLICATE_API_TOKEN": "",
        "MUSICGEN_SHARED": "",
        "SPACE_ID": "",
        **extra,
    }
    return env


@pytest.fixture(scope="module")
def module_emulator() -> Iterator[Emulator]:
    """One emulator for a module's tests (they share one app); fast timings by default."""
    with run_emulator(EmulatorConfig.fast(max_wait_seconds=0.2)) as emulator:
        yield emulator


@contextlib.contextmanager
def emulator_timing(emulator: Emulator, **changes: Any) -> Iterator[None]:
    """Change the emulator's knobs for one test, then put them back."""
    before = {k: getattr(emulator.config, k) for k in changes}
    emulator.configure(**changes)
    try:
        yield
    finally:
        emulator.configure(**before)


# -- the browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def new_page(browser: Any, url: str, *, width: int = 1280, height: int = 900) -> Any:
    """A fresh visitor (own browser context, so own localStorage) on the page, ready to use."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    open_page(page, url)
    return page


def open_page(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#generate-btn")
    # The load event lists the history; the summary line appears once it has run.
    page.wait_for_function(
        "() => (document.querySelector('#history-summary')?.innerText || '').includes('page')"
    )


def shot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """Save a screenshot under test-artifacts/ (looked at by a person, kept out of git)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


# -- driving the page ------------------------------------------------------------------------


def set_token(page: Any, token: str) -> None:
    box = page.locator("#token-box input")
    box.fill(token)
    box.blur()


def set_prompt(page: Any, text: str) -> None:
    box = page.locator("#prompt textarea")
    box.fill(text)


def set_number(page: Any, elem_id: str, value: float) -> None:
    """Type a value into a slider's box, as a musician would, until the slider shows it.

    A slider that has just been shown (an accordion opening) may still apply its initial
    value after the first keystrokes; typing again then is what a person would do too.
    """
    box = page.locator(f"#{elem_id} input[type='number']")
    track = page.locator(f"#{elem_id} input[type='range']")
    for _ in range(5):
        box.fill(str(value))
        box.press("Enter")
        box.blur()
        page.wait_for_timeout(100)
        if float(track.input_value()) == float(value) and float(box.input_value()) == value:
            return
    raise AssertionError(f"#{elem_id} would not take {value}")


def choose_radio(page: Any, elem_id: str, value: str) -> None:
    page.locator(f"#{elem_id} input[type='radio'][value='{value}']").check()


def set_checkbox(page: Any, elem_id: str, checked: bool) -> None:
    page.locator(f"#{elem_id} input[type='checkbox']").set_checked(checked)


def choose_dropdown(page: Any, elem_id: str, label_start: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.locator("ul[role='listbox'] li", has_text=label_start).first.click()


def upload_audio(page: Any, path: Path) -> None:
    page.locator("#input-audio input[type='file']").set_input_files(str(path))
    page.wait_for_function(
        "() => (document.querySelector('#clip-info')?.innerText || '').startsWith('Clip:')"
    )


def generate(page: Any) -> None:
    page.locator("#generate-btn").click()


def run_status(page: Any) -> str:
    return page.locator("#run-status .ms-status").get_attribute("data-status") or ""


def wait_status(page: Any, *statuses: str, timeout_ms: int = UI_TIMEOUT_MS) -> str:
    """Wait until the run panel shows one of `statuses`; returns it."""
    wanted = list(statuses)
    page.wait_for_function(
        "(wanted) => wanted.includes(document.querySelector('#run-status .ms-status')"
        "?.dataset.status)",
        arg=wanted,
        timeout=timeout_ms,
    )
    return run_status(page)


def progress_value(page: Any) -> int:
    bar = page.locator("#run-progress .ms-progress")
    return int(bar.get_attribute("aria-valuenow") or 0)


def prediction_link(page: Any) -> str:
    """The prediction id shown in the result's facts (linked to its Replicate page)."""
    link = page.locator("#result-facts a")
    href = link.get_attribute("href") or ""
    assert href == f"https://replicate.com/p/{link.inner_text()}", href
    return link.inner_text()


def card(page: Any, text: str) -> Any:
    """The history card whose text contains `text`."""
    return page.locator("#history-cards .ms-card", has_text=text)


def wait_card(page: Any, text: str, status: str | None = None) -> Any:
    located = card(page, text)
    located.first.wait_for()
    if status is not None:
        located.first.locator(f".ms-card-text[data-status='{status}']").wait_for()
    return located.first


AUDIO_DURATION_JS = """
(url) => new Promise((resolve) => {
  const audio = new Audio();
  audio.preload = "metadata";
  audio.onloadedmetadata = () => resolve(audio.duration);
  audio.onerror = () => resolve(-1);
  audio.src = url;
})
"""


def playable_seconds(page: Any, scope: Any) -> float:
    """Load the player's audio in the page's own <audio> element; its duration in seconds."""
    link = scope.locator("a.download-link").first
    link.wait_for(state="attached")
    href = link.get_attribute("href")
    assert href, "the player has no audio"
    return float(page.evaluate(AUDIO_DURATION_JS, href))


def player_duration_text(scope: Any) -> str:
    """What the player itself shows as the length (e.g. "0:08") once it has loaded."""
    from playwright.sync_api import expect

    shown = scope.locator("time#duration").first
    expect(shown).not_to_have_text("0:00")
    return shown.inner_text()


def creates(emulator: Emulator) -> list[dict[str, Any]]:
    """Bodies of every POST /v1/predictions the emulator received, oldest first."""
    return [
        r.json
        for r in emulator.requests
        if r.method == "POST" and re.fullmatch(r"/v1/predictions/?", r.path)
    ]
