"""What Gradio would do for every visitor or event, done once or not at all: the page and its
config are made once per address they are asked at (Gradio copies and rewrites its whole
page config for each `GET /` and `GET /config`), and the queue does not sum up every event it
has run for a monitoring page this app never opens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio import route_utils
from gradio.queueing import Queue
from gradio_client import Client

import ui
from app import build_app
from services.settings import Settings
from tests.browser_support import free_port


@pytest.fixture
def summaries(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many event records each of Gradio's queue summaries tabulated (set before the app
    is built: the queue reads its setting as it is made)."""
    # Unset for the app, and unset again afterwards (building the app sets it in os.environ).
    monkeypatch.setenv("GRADIO_ANALYTICS_CACHE_FREQUENCY", "")
    monkeypatch.delenv("GRADIO_ANALYTICS_CACHE_FREQUENCY")
    made: list[int] = []
    original = Queue._get_df

    def counted(records: Any) -> Any:
        made.append(len(records))
        return original(records)

    monkeypatch.setattr(Queue, "_get_df", staticmethod(counted))
    return made


@pytest.fixture
def page(tmp_path: Path, summaries: list[int]) -> Iterator[str]:
    """The studio's page launched in this process (as `app.py` launches it), its origin."""
    settings = Settings.from_env(
        {"MUSICGEN_DATA_DIR": str(tmp_path), "MUSICGEN_ENGINE": "replicate"}
    )
    demo, _service, library = build_app(settings)
    demo.launch(
        **ui.launch_options(settings),
        server_name="127.0.0.1",
        server_port=free_port(),
        prevent_thread_lock=True,
        quiet=True,
        app_kwargs={"middleware": ui.server_middleware()},
    )
    try:
        yield demo.local_url.rstrip("/")
    finally:
        demo.close()
        library.close()


@pytest.fixture
def rewrites(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The root URLs Gradio writes into a copy of its config, one per copy it makes."""
    made: list[str] = []
    original = route_utils.update_root_in_config

    def counted(config: Any, root: str) -> Any:
        made.append(root)
        return original(config, root)

    monkeypatch.setattr(route_utils, "update_root_in_config", counted)
    return made


def test_many_visitors_get_the_same_page_made_once(page: str, rewrites: list[str]) -> None:
    with httpx.Client(base_url=page, timeout=30) as client:
        first_page, first_config = client.get("/"), client.get("/config")
        later = [(client.get("/").content, client.get("/config").content) for _ in range(10)]
    assert first_page.status_code == first_config.status_code == 200
    assert "MusicGen" in first_page.text and first_config.json()["root"] == page
    assert all(p == first_page.content and c == first_config.content for p, c in later)
    assert len(rewrites) == 2  # the page and the config, each made once for eleven visitors


def test_each_address_gets_its_own_urls_and_a_signed_in_visitor_is_never_served_a_copy(
    page: str, rewrites: list[str]
) -> None:
    with httpx.Client(base_url=page, timeout=30) as client:
        direct = client.get("/config").json()
        proxied = [
            client.get("/config", headers={"X-Forwarded-Host": "studio.example.org"}).json()
            for _ in range(3)
        ]
        secure = client.get(
            "/config",
            headers={"X-Forwarded-Host": "studio.example.org", "X-Forwarded-Proto": "https"},
        ).json()
        for _ in range(2):
            client.get("/config", headers={"Cookie": "access-token-x=secret"})
    assert direct["root"] == page
    assert [p["root"] for p in proxied] == ["http://studio.example.org"] * 3
    assert secure["root"] == "https://studio.example.org"
    # One copy per address, and one per request carrying Gradio's login cookie.
    assert len(rewrites) == 3 + 2


def test_one_request_cannot_change_the_page_every_later_visitor_gets(page: str) -> None:
    # A repeated header counts as Gradio reads it (its first value), and what Gradio's CORS
    # layer adds for one caller's Origin is not handed to the next caller.
    host = httpx.URL(page).netloc.decode()
    with httpx.Client(base_url=page, timeout=30) as client:
        crafted = client.get(
            "/config",
            headers=[
                ("X-Forwarded-Host", "evil.example"),
                ("X-Forwarded-Host", host),
                ("Origin", "http://localhost:5173"),  # an origin Gradio's CORS allows
            ],
        )
        later = client.get("/config", headers={"X-Forwarded-Host": host})
        plain = client.get("/config")
    assert crafted.json()["root"] == "http://evil.example"  # Gradio's own reading, for it
    assert crafted.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert later.json()["root"] == f"http://{host}"
    assert "access-control-allow-origin" not in later.headers
    assert "access-control-allow-origin" not in plain.headers
    assert plain.json()["root"] == page


def test_the_queue_does_not_tabulate_every_event_it_ran(page: str, summaries: list[int]) -> None:
    client = Client(page + "/", verbose=False)
    for _ in range(3):  # three events run to their end (each refused: nothing to make)
        with pytest.raises(Exception, match="Nothing was sent"):
            client.predict(prompt="", duration=0, api_name="/generate")
    client.close()
    assert summaries == []
