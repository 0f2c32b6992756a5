"""The selected result's panels answer in one event; what only that event sets is not sent
again while the page shows it (a property update costs the server a component rebuilt), and
what another event may have changed always is."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ui.selection import Selection


def page() -> tuple[Selection, dict[str, Any]]:
    with gr.Blocks() as demo:
        selected = gr.State(None)
        parts = {
            "extend": gr.Button("Extend", interactive=False),  # set by the selection only
            "facts": gr.HTML(),  # also set by another event
            "favourite": gr.Button("Favourite"),
            "stems": gr.Dropdown(choices=[]),
        }
        selection = Selection(selected)

        def track(snap: Any) -> dict[Any, Any]:
            ok = bool(snap)
            return {
                parts["extend"]: gr.update(interactive=ok),
                parts["facts"]: f"<b>{snap}</b>",
                parts["favourite"]: gr.update(interactive=ok),
            }

        def stems(snap: Any) -> Any:  # a plain function returning one value per output
            return gr.update(choices=[f"{snap}-drums"])

        selection.watch(track, [selected], [parts["extend"], parts["facts"], parts["favourite"]])
        selection.watch(stems, [selected], [parts["stems"]])
        parts["favourite"].click(lambda: gr.update(value="★"), None, [parts["favourite"]])
        gr.Button("Other").click(lambda: "", None, [parts["facts"]])
        selection.wire(demo)
    return selection, parts


async def test_one_event_answers_for_every_panel_and_sends_only_news():
    selection, parts = page()
    first = await selection.show("take-1", None)
    assert first[parts["extend"]]["interactive"] is True
    assert first[parts["stems"]]["choices"] == ["take-1-drums"]
    sent = first[selection.sent]

    again = await selection.show("take-2", sent)
    # Extend is still usable and only this event sets it: not sent again.
    assert parts["extend"] not in again
    # The facts and Favourite may have been changed by other events: always sent.
    assert again[parts["facts"]] == "<b>take-2</b>"
    assert again[parts["favourite"]]["interactive"] is True
    assert again[parts["stems"]]["choices"] != first[parts["stems"]]["choices"]

    # A selection that changes it sends it; a reloaded page (nothing sent yet) gets it all.
    cleared = await selection.show(None, again[selection.sent])
    assert cleared[parts["extend"]]["interactive"] is False
    assert parts["extend"] in await selection.show("take-3", None)
