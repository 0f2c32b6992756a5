"""Shared pieces of the browser and Gradio API tests: the app as a real subprocess, Chromium,
screenshots, and helpers that drive the page. The fixtures built on them (`module_emulator`,
`app`, `browser`) are in conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.emulator import Emulator

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
# The tokens the module emulator (conftest's `module_emulator`) takes: the server-wide one of
# conftest's `app`, and one a visitor pastes or passes as `api_token`. Fake; split for scanners.
SERVER_TOKEN = "r8_" + "StudioServerToken0123456789abcdefghijklm"
VISITOR_TOKEN = "r8_" + "VisitorOwnToken0123456789abcdefghijklmn"
APP_START_TIMEOUT_S = 60.0
# What `/generate` and its siblings take first: the model's inputs, in the schema's order.
MODEL_INPUTS = [
    "prompt",
    "input_audio",
    "duration",
    "continuation",
    "continuation_start",
    "continuation_end",
    "model_version",
    "multi_band_diffusion",
    "normalization_strategy",
    "output_format",
    "seed",
    "temperature",
    "top_k",
    "top_p",
    "classifier_free_guidance",
]
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

    @property
    def data_dir(self) -> Path:
        """The app's data folder (MUSICGEN_DATA_DIR): its library."""
        return Path(self.env["MUSICGEN_DATA_DIR"])

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


def parameter_names(client: Any, endpoint: str) -> list[str]:
    """The parameters a gradio_client `client` lists for a named endpoint, in order."""
    api = client.view_api(return_format="dict", print_info=False)
    return [p["parameter_name"] for p in api["named_endpoints"][endpoint]["parameters"]]


def app_env(emulator: Emulator, data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for an app wired to the emulator; no server token unless given.

    Replicate is the only engine unless `MUSICGEN_ENGINE` is given.
    """
    env = {
        "REPLICATE_BASE_URL": emulator.base_url,
        "MUSICGEN_DATA_DIR": str(data_dir),
        "REPLICATE_API_TOKEN": "",
        "MUSICGEN_SHARED": "",
        "SPACE_ID": "",
        # These apps exercise Replicate; the local engine's page has tests of its own.
        "MUSICGEN_ENGINE": "replicate",
        **extra,
    }
    return env


@contextlib.contextmanager
def studio_app(emulator: Emulator, folder: Path, **extra: str) -> Iterator[AppProcess]:
    """`python app.py` wired to the emulator (as `app_env`, with `extra`): its library in
    folder/data, Gradio's files in folder/gr, its log in folder/app.log."""
    env = app_env(emulator, folder / "data", **{"GRADIO_TEMP_DIR": str(folder / "gr"), **extra})
    with running_app(env, folder / "app.log") as app:
        yield app


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


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Headless Chromium (the system's), driven by Playwright; closed when the block ends."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


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


# -- waiting for what one action changed ------------------------------------------------------
#
# A wait that only looks at the page's current text can be satisfied by what an EARLIER step
# left there: right after Generate is pressed the run panel still shows the previous run's
# "succeeded", the result its audio, the form its old messages. So every action below first
# *marks* the elements it will change (their content just before the action), and every wait
# asks for a value those elements took on AFTER the mark. A MutationObserver keeps a log of
# each marked element's values, so even a state shown for a moment counts as a change.

RUN_STATUS = "#run-status .ms-status"
RUN_PROGRESS = "#run-progress .ms-progress"
FORM_ERRORS = "#form-errors"
RESULT_FACTS = "#result-facts"
RESULT_LINK = "#result-facts .ms-facts"  # the track's facts: data-run, data-audio (its file)
RESULT_DURATION = "#result-audio time#duration"
FINAL_STATUSES = ("succeeded", "failed", "canceled", "aborted", "lost")

MARK_JS = """
(selectors) => {
  const w = window;
  if (!w.__msMarks) {
    w.__msMarks = {};
    const look = (sel) => {
      const el = document.querySelector(sel);
      return el ? el.outerHTML : null;
    };
    w.__msLook = look;
    // What a log entry keeps: a status, a percentage, a link, or else the text.
    const value = (sel) => {
      const el = document.querySelector(sel);
      if (!el) return null;
      if (el.dataset.status !== undefined) return el.dataset.status;
      if (el.hasAttribute('aria-valuenow')) return el.getAttribute('aria-valuenow');
      if (el.tagName === 'A') return el.getAttribute('href');
      return el.innerText;
    };
    w.__msNote = () => {
      for (const mark of Object.values(w.__msMarks)) {
        const now = look(mark.selector);
        if (now === mark.last) continue;
        mark.last = now;
        if (now !== mark.before) mark.changed = true;
        mark.log.push(value(mark.selector));
      }
    };
    new MutationObserver(w.__msNote).observe(document.documentElement, {
      subtree: true, childList: true, attributes: true, characterData: true,
    });
  }
  for (const sel of selectors) {
    const before = w.__msLook(sel);
    w.__msMarks[sel] = { selector: sel, before, last: before, changed: false, log: [] };
  }
}
"""

# The predicates below run in the page; `changed(sel)` is true once the element marked as `sel`
# differs from what it was at the mark (undefined when it was never marked).
CHANGED_JS = """
const changed = (sel) => {
  const mark = window.__msMarks && window.__msMarks[sel];
  if (!mark) return undefined;
  window.__msNote();
  return mark.changed;
};
"""


def mark(page: Any, *selectors: str) -> None:
    """Remember what `selectors` show now; the waits that follow need them to change first."""
    page.evaluate(MARK_JS, list(selectors))


def _require_mark(page: Any, selector: str, what: str) -> None:
    if not page.evaluate("(sel) => !!(window.__msMarks && window.__msMarks[sel])", selector):
        raise AssertionError(
            f"{what} waits for what an action changed: do it with generate() or act_and_wait_text()"
        )


def marked_log(page: Any, selector: str) -> list[str | None]:
    """Every value the element marked as `selector` took since its mark, oldest first."""
    return page.evaluate(
        "(sel) => { window.__msNote && window.__msNote(); "
        "return (window.__msMarks && window.__msMarks[sel]) ? window.__msMarks[sel].log : []; }",
        selector,
    )


def _wait(page: Any, body: str, arg: Any, timeout_ms: int, explain: str) -> Any:
    """wait_for_function on `(arg) => { CHANGED_JS; body }`; a timeout says what was seen."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        handle = page.wait_for_function(
            f"(arg) => {{ {CHANGED_JS} {body} }}", arg=arg, timeout=timeout_ms
        )
    except PlaywrightTimeout as err:
        raise AssertionError(
            f"{explain}; run statuses since the press: {marked_log(page, RUN_STATUS)}"
        ) from err
    return handle.json_value()


def act_and_wait_text(
    page: Any,
    action: Callable[[], Any],
    selector: str,
    text: str,
    *,
    starts: bool = False,
    timeout_ms: int = UI_TIMEOUT_MS,
) -> str:
    """Do `action`, then wait until `selector` has changed because of it and its text contains
    (or, with `starts`, starts with) `text`; returns that text."""
    mark(page, selector)
    action()
    return _wait(
        page,
        """
        const [sel, text, starts] = arg;
        if (!changed(sel)) return false;
        const shown = document.querySelector(sel)?.innerText || '';
        return (starts ? shown.startsWith(text) : shown.includes(text)) ? shown : false;
        """,
        [selector, text, starts],
        timeout_ms,
        f"{selector} did not change to show {text!r}",
    )


def upload_audio(page: Any, path: Path) -> str:
    """Give the form a clip; waits for the clip line this clip produced, and returns it."""
    return act_and_wait_text(
        page,
        lambda: page.locator("#input-audio input[type='file']").set_input_files(str(path)),
        "#clip-info",
        "Clip:",
        starts=True,
    )


def generate(page: Any, *, shortcut: bool = False) -> None:
    """Press Generate (or Ctrl+Enter in the prompt, with `shortcut`).

    The run panel, the form's messages and the result are marked first: the waits below
    (wait_status, wait_progress, wait_form_errors, wait_result, ...) see only this press's run.
    """
    mark(page, RUN_STATUS, RUN_PROGRESS, FORM_ERRORS, RESULT_FACTS, RESULT_LINK, RESULT_DURATION)
    if shortcut:
        page.locator("#prompt textarea").press("Control+Enter")
    else:
        page.locator("#generate-btn").click()


def run_status(page: Any) -> str:
    return page.locator(RUN_STATUS).get_attribute("data-status") or ""


def wait_status(page: Any, *statuses: str, timeout_ms: int = UI_TIMEOUT_MS) -> str:
    """Wait until the run panel shows one of `statuses` for the run generate() started (never
    the state an earlier run left there); returns the status it showed."""
    _require_mark(page, RUN_STATUS, "wait_status")
    return _wait(
        page,
        """
        if (!changed(arg.sel)) return false;
        const status = document.querySelector(arg.sel)?.dataset.status;
        return arg.wanted.includes(status) ? status : false;
        """,
        {"sel": RUN_STATUS, "wanted": list(statuses)},
        timeout_ms,
        f"the run never showed {list(statuses)}",
    )


def run_statuses(page: Any) -> list[str | None]:
    """The statuses the run panel showed since the last generate(), oldest first."""
    return marked_log(page, RUN_STATUS)


def progress_value(page: Any) -> int:
    bar = page.locator(RUN_PROGRESS)
    return int(bar.get_attribute("aria-valuenow") or 0)


def wait_progress(page: Any, above: int, *, timeout_ms: int = UI_TIMEOUT_MS) -> int:
    """Wait until this run's progress bar shows more than `above` percent; returns it."""
    _require_mark(page, RUN_PROGRESS, "wait_progress")
    return _wait(
        page,
        """
        if (!changed(arg.sel)) return false;
        const now = +document.querySelector(arg.sel)?.getAttribute('aria-valuenow');
        return now > arg.above ? now : false;
        """,
        {"sel": RUN_PROGRESS, "above": above},
        timeout_ms,
        f"the run's progress never went above {above}%",
    )


def run_progress(page: Any) -> list[int]:
    """The percentages this run's progress bar showed, in order, each once."""
    seen: list[int] = []
    for value in marked_log(page, RUN_PROGRESS):
        number = int(value or 0)
        if number not in seen:
            seen.append(number)
    return seen


def wait_progress_steps(page: Any, steps: int, *, timeout_ms: int = UI_TIMEOUT_MS) -> bool:
    """Wait until this run's progress bar has shown `steps` different values between 0 and
    100 % (True), or the run has ended without them (False)."""
    _require_mark(page, RUN_PROGRESS, "wait_progress_steps")
    return (
        _wait(
            page,
            """
        changed(arg.bar);
        const shown = window.__msMarks[arg.bar].log.filter((v) => 0 < +v && +v < 100);
        if (new Set(shown).size >= arg.steps) return 'steps';
        const status = document.querySelector(arg.sel)?.dataset.status;
        return changed(arg.sel) && arg.final.includes(status) ? 'ended' : false;
        """,
            {"bar": RUN_PROGRESS, "sel": RUN_STATUS, "steps": steps, "final": list(FINAL_STATUSES)},
            timeout_ms,
            f"the run neither showed {steps} progress steps nor ended",
        )
        == "steps"
    )


def wait_form_errors(page: Any, text: str, *, timeout_ms: int = UI_TIMEOUT_MS) -> str:
    """Wait until the messages beside the form changed since the press and contain `text`."""
    _require_mark(page, FORM_ERRORS, "wait_form_errors")
    return _wait(
        page,
        """
        if (!changed(arg.sel)) return false;
        const shown = document.querySelector(arg.sel)?.innerText || '';
        return shown.includes(arg.text) ? shown : false;
        """,
        {"sel": FORM_ERRORS, "text": text},
        timeout_ms,
        f"the form's messages never showed {text!r}",
    )


def wait_result(page: Any, *, timeout_ms: int = UI_TIMEOUT_MS) -> str:
    """Wait until the result shows this run (its facts and its audio); its library id."""
    _require_mark(page, RESULT_FACTS, "wait_result")
    return _wait(
        page,
        """
        if (!changed(arg.facts) || !changed(arg.link)) return false;
        const id = document.querySelector(arg.facts + ' .ms-facts')?.dataset.run;
        const href = document.querySelector(arg.link)?.dataset.audio || '';
        return id && href.includes(id) ? id : false;
        """,
        {"facts": RESULT_FACTS, "link": RESULT_LINK},
        timeout_ms,
        "the result never showed this run's facts and audio",
    )


def status_prediction_id(page: Any) -> str:
    """The prediction id the run panel links to (this run's, once Replicate made it)."""
    _require_mark(page, RUN_STATUS, "status_prediction_id")
    return _wait(
        page,
        """
        if (!changed(arg)) return false;
        const href = document.querySelector(arg + ' a')?.getAttribute('href') || '';
        return href.split('/p/')[1] || false;
        """,
        RUN_STATUS,
        UI_TIMEOUT_MS,
        "the run panel never linked this run's prediction",
    )


def prediction_link(page: Any) -> str:
    """This run's prediction id, in the result's Details (linked to its Replicate page)."""
    wait_result(page)
    link = page.locator("#result-facts a")
    text = (link.text_content() or "").strip()  # in the closed Details: not rendered text
    href = link.get_attribute("href") or ""
    assert href == f"https://replicate.com/p/{text}", href
    return text


def card(page: Any, text: str) -> Any:
    """The history card whose text contains `text`."""
    return page.locator("#history-cards .ms-card", has_text=text)


def wait_card(page: Any, text: str, status: str | None = None, *, run_id: str | None = None) -> Any:
    """The history card containing `text` (and, with `run_id`, of that very run), once it shows
    `status` if given."""
    located = card(page, text)
    if run_id is not None:
        located = located.filter(has=page.locator(f".ms-card-text[data-run='{run_id}']"))
    located.first.wait_for()
    if status is not None:
        located.first.locator(f".ms-card-text[data-status='{status}']").wait_for()
    return located.first


def card_run_id(scope: Any) -> str:
    """The library id of the run a history card shows."""
    return scope.locator(".ms-card-text").first.get_attribute("data-run") or ""


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
    """Load what a history card's player plays (its own run's file, fetched only once played)
    in the page's own <audio> element; its duration in seconds."""
    run_id = card_run_id(scope)
    assert run_id, "not a history card"
    player = scope.locator("audio.ms-card-audio")
    assert player.count() == 1, "the card has no player of its own"
    href = player.get_attribute("src")
    assert href and run_id in href, "the card's player does not play its own run"
    assert href == scope.locator(".ms-card-text").first.get_attribute("data-audio")
    assert player.get_attribute("preload") == "none"  # a listing downloads no take
    return float(page.evaluate(AUDIO_DURATION_JS, href))


def result_seconds(page: Any) -> float:
    """Load this run's result audio in the page's own <audio> element; its duration."""
    run_id = wait_result(page)
    href = page.locator(RESULT_LINK).get_attribute("data-audio") or ""
    assert run_id in href, href
    return float(page.evaluate(AUDIO_DURATION_JS, href))


def result_duration_text(page: Any) -> str:
    """What the result player itself shows as this run's length (e.g. "0:08") once loaded."""
    wait_result(page)
    _require_mark(page, RESULT_DURATION, "result_duration_text")
    return _wait(
        page,
        """
        if (!changed(arg)) return false;
        const shown = document.querySelector(arg)?.innerText || '0:00';
        return shown !== '0:00' ? shown : false;
        """,
        RESULT_DURATION,
        UI_TIMEOUT_MS,
        "the result player never showed this run's length",
    )


def creates(emulator: Emulator) -> list[dict[str, Any]]:
    """Bodies of every POST /v1/predictions the emulator received, oldest first."""
    return [
        r.json
        for r in emulator.requests
        if r.method == "POST" and re.fullmatch(r"/v1/predictions/?", r.path)
    ]
