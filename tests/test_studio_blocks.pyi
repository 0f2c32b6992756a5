"""The page's Blocks: an output a handler leaves out is not rebuilt, and the page gets exactly
what Gradio's own Blocks would send for the same changes."""

from __future__ import annotations

from typing import Any

import gradio as gr
from gradio.state_holder import SessionState

from ui.studio_blocks import StudioBlocks

from gradio.events import Dependency

class CountedAudio(gr.Audio):
    """A gr.Audio that counts how often it is built (Gradio rebuilds one per property update)."""

    built = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        CountedAudio.built += 1
        super().__init__(*args, **kwargs)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


def page(blocks_class: type[gr.Blocks]) -> tuple[gr.Blocks, dict[str, Any]]:
    with blocks_class() as demo:
        parts = {
            "audio": CountedAudio(),
            "status": gr.HTML(),
            "run": gr.State(None),
            "start": gr.Button("Go"),
        }
        parts["start"].click(lambda: None, None, list(parts.values()))
    return demo, parts


async def sent(blocks_class: type[gr.Blocks], changes: Any) -> tuple[list[Any], int]:
    """What the page is sent for a handler's `changes` (a function of the parts), and how many
    times the audio player was rebuilt for it."""
    demo, parts = page(blocks_class)
    block_fn = next(iter(demo.fns.values()))
    state = SessionState(demo)
    before = CountedAudio.built
    out = await demo.postprocess_data(block_fn, changes(parts), state)
    return out, CountedAudio.built - before


async def test_a_left_out_output_is_sent_as_gradio_sends_it_without_a_rebuild():
    cases = [
        lambda p: {p["status"]: "<b>running</b>", p["start"]: gr.update(interactive=False)},
        lambda p: {p["run"]: "run-1"},
        lambda p: [gr.skip(), "<i>done</i>", gr.skip(), gr.update(interactive=True)],
        lambda p: gr.skip(),
    ]
    for changes in cases:
        theirs, their_rebuilds = await sent(gr.Blocks, changes)
        ours, our_rebuilds = await sent(StudioBlocks, changes)
        assert ours == theirs
        assert their_rebuilds == 1 and our_rebuilds == 0  # Gradio rebuilds the skipped player


async def test_a_changed_player_is_still_updated():
    theirs, _ = await sent(gr.Blocks, lambda p: {p["audio"]: gr.update(visible=False)})
    ours, rebuilds = await sent(StudioBlocks, lambda p: {p["audio"]: gr.update(visible=False)})
    assert ours == theirs and ours[0]["visible"] is False and rebuilds == 1