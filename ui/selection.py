"""The selected result's panels, all updated by one event when the selection changes.

The track, its stems and MIDI panel, Extend and Arrange each show something of the selected
result. A listener each would make every new take, every Open, cost the server four events
(a queue round each); `Selection` gathers what each panel asks for and answers in one.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
from gradio.blocks import Block

from ui.events import PRIVATE, Updates


@dataclass(frozen=True)
class _Watcher:
    fn: Callable[..., Any]
    inputs: tuple[Any, ...]
    outputs: tuple[Any, ...]


@dataclass
class Selection:
    """The watchers of `selected` (a gr.State): call `watch` for each, then `wire` once."""

    selected: gr.State
    _watchers: list[_Watcher] = field(default_factory=list)

    def watch(self, fn: Callable[..., Any], inputs: Sequence[Any], outputs: Sequence[Any]) -> None:
        """`fn(*inputs)` runs whenever the selection changes; it returns a dict of updates or a
        value per output, as a Gradio handler would."""
        self._watchers.append(_Watcher(fn, tuple(inputs), tuple(outputs)))

    def inputs(self) -> list[Any]:
        return list(dict.fromkeys(b for w in self._watchers for b in w.inputs))

    def outputs(self) -> list[Any]:
        return list(dict.fromkeys(b for w in self._watchers for b in w.outputs))

    async def show(self, *values: Any) -> Updates:
        """Every watcher's updates, in the order they were added (a later one wins a clash)."""
        given = dict(zip(self.inputs(), values, strict=True))
        shown: Updates = {}
        for w in self._watchers:
            args = [given[b] for b in w.inputs]
            if inspect.iscoroutinefunction(w.fn):
                result = await w.fn(*args)
            else:  # a library read: off the event loop, as Gradio runs a plain handler
                result = await asyncio.to_thread(w.fn, *args)
            shown.update(_as_updates(result, w.outputs))
        return shown

    def wire(self) -> None:
        # One at a time per page, the newest last: an earlier selection (a slow conversion)
        # can never land after a later one.
        self.selected.change(
            self.show, self.inputs(), self.outputs(), trigger_mode="always_last", **PRIVATE
        )


def _as_updates(result: Any, outputs: tuple[Any, ...]) -> Updates:
    if isinstance(result, dict) and all(isinstance(key, Block) for key in result):
        return result
    if len(outputs) == 1:
        return {outputs[0]: result}
    return dict(zip(outputs, result, strict=True))
