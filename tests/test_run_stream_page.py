"""What the page shows while a local take is made, folded the way the browser folds the
handler's updates: Cancel usable until the end, the preview shown once and fed every piece,
Generate free again at the end.

Progress comes several times a second; each property update (a button's state, a player's
visibility) costs the server a component rebuilt. The buttons' state goes with the start, the
end and at most every BUTTONS_REFRESH_S, the preview's visibility once (tiny checkpoint, real
local engine, real library).
"""

from __future__ import annotations

import io
import math
import time
import wave
from typing import Any

import gradio as gr

from services.generation import GenerationService
from services.library import Library
from services.settings import Settings
from ui.context import Studio
from ui.files import FileServer
from ui.form_rules import FormValues
from ui.run_panel import build_controls, build_run_view
from ui.run_stream import BUTTONS_REFRESH_S
from ui.runs import RunHandlers


def is_property_update(value: Any) -> bool:
    return isinstance(value, dict) and value.get("__type__") == "update"


def form(**values: Any) -> list[Any]:
    """The form's values in the order the handler takes them."""
    return FormValues.of(**values).ordered()


async def test_a_local_take_on_the_page_shows_cancel_previews_and_then_frees_generate(
    tmp_path, tiny_musicgen
):
    from services.engines.local import LocalConfig, LocalEngine

    # Every preview is written (lead 0): a tiny take is done too soon for one to be heard.
    local = LocalEngine(
        LocalConfig(
            default_model=str(tiny_musicgen.text),
            device="cpu",
            preview_seconds=0.25,
            preview_lead_seconds=0,
        )
    )
    settings = Settings.from_env({"MUSICGEN_DATA_DIR": str(tmp_path), "MUSICGEN_ENGINE": "local"})
    library = Library(tmp_path)
    service = GenerationService(settings, library, local=local)
    studio = Studio(settings=settings, service=service, library=library, files=FileServer())
    with gr.Blocks():
        controls, view = build_controls(), build_run_view()
    handlers = RunHandlers(studio, controls, view)
    generate, cancel = controls.generate, controls.cancel

    page: dict[Any, dict[str, Any]] = {}  # each component's properties as the browser has them
    pieces: list[bytes] = []
    yields, button_sends, preview_shows = 0, 0, 0
    started = time.monotonic()
    try:
        values = form(prompt="calm piano", duration=2, random_seed=False, seed=7)
        async for changes in handlers.generate(None, None, None, "local", None, *values):
            yields += 1
            button_sends += generate in changes
            for component, value in changes.items():
                props = page.setdefault(component, {})
                if is_property_update(value):
                    props.update({k: v for k, v in value.items() if k != "__type__"})
                else:
                    props["value"] = value
            if view.preview in changes:
                piece = changes[view.preview]
                preview_shows += is_property_update(piece) and "visible" in piece
                pieces.append(piece["value"] if is_property_update(piece) else piece)
            if "succeeded" not in str(page.get(view.status, {}).get("value")):
                # While the take is made the musician can cancel it, and only that.
                assert page[cancel]["interactive"] and not page[generate]["interactive"]
    finally:
        local.shutdown()
    took = time.monotonic() - started

    assert "succeeded" in page[view.status]["value"]
    assert page[generate]["interactive"] and not page[cancel]["interactive"]
    assert page[view.last_run]["value"]["run_id"]  # the track shows the new take

    # The streamed start played in the result's place: shown once, fed every piece in order.
    assert preview_shows == 1 and page[view.result_audio]["visible"] is False
    assert len(pieces) >= 3
    heard = 0.0
    for piece in pieces:
        with wave.open(io.BytesIO(piece)) as w:
            heard += w.getnframes() / w.getframerate()
    assert 0 < heard <= 2.0

    # Progress-only news did not carry the buttons' state each time.
    assert yields > button_sends
    assert button_sends <= 2 + math.ceil(took / BUTTONS_REFRESH_S)
