"""gr.Blocks whose handlers' untouched outputs cost the server nothing.

A handler that returns a dict of changes leaves its other outputs alone; Gradio fills each of
them with `gr.skip()` and then handles that like any property update: it builds the component
anew and its whole config (for a file component, the JSON schema of its data model too).
The page's run streams have a dozen outputs and touch three or four per update, so a take made
on the page cost some seventy such rebuilds, most of what it cost the server beyond the take
itself. A skip changes nothing on the page: here only the other outputs are processed, and the
skipped ones get what Gradio would have sent for them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import gradio as gr
from gradio.block_function import BlockFunction
from gradio.blocks import Block, BlockContext, convert_component_dict_to_list
from gradio.components import Component
from gradio.state_holder import SessionState

SKIP: dict[str, str] = {"__type__": "update"}


def _is_skip(value: Any) -> bool:
    return isinstance(value, dict) and value == SKIP


def _skipped(block: Block) -> Any:
    """What Gradio sends for a skipped output: nothing for a State, else an empty update."""
    return None if block.stateful else dict(SKIP)


class StudioBlocks(gr.Blocks):
    """The studio's page (see the module's docstring)."""

    async def postprocess_data(
        self,
        block_fn: BlockFunction,
        predictions: list[Any] | dict[Any, Any],
        state: SessionState | None,
    ) -> list[Any]:
        outputs: Sequence[Component | BlockContext] = block_fn.outputs
        values: Any = predictions
        if isinstance(values, dict) and values and all(isinstance(k, Block) for k in values):
            values = convert_component_dict_to_list(list(outputs), values)
        elif _is_skip(values) and len(outputs) > 1:
            values = [dict(SKIP) for _ in outputs]
        if block_fn.batch or len(outputs) < 2 or not isinstance(values, (list, tuple)):
            return await super().postprocess_data(block_fn, predictions, state)
        kept = [i for i, value in enumerate(values) if not _is_skip(value)]
        if len(kept) == len(values) or len(values) != len(outputs):
            return await super().postprocess_data(block_fn, list(values), state)
        done: list[Any] = []
        if kept:
            part = copy.copy(block_fn)
            part.outputs = [outputs[i] for i in kept]
            given = [values[i] for i in kept]
            # Gradio takes a one-output handler's value bare.
            done = await super().postprocess_data(
                part, given if len(given) > 1 else given[0], state
            )
        out = [_skipped(block) for block in outputs]
        for i, value in zip(kept, done, strict=True):
            out[i] = value
        return out
