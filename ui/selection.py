"""The selected result's panels, all updated by one event when the selection changes.

The track, its stems and MIDI panel, Extend and Arrange each show something of the selected
result. A listener each would make every new take, every Open, cost the server four events
(a queue round each); `Selection` gathers what each panel asks for and answers in one. A
property update costs the server a component rebuilt, so what only this event ever sets (most
of the track's buttons) is not sent again while the page already shows it.
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
    # What this event last sent each block that no other event sets (block id -> update).
    sent: gr.State = field(default_factory=lambda: gr.State(None))
    _watchers: list[_Watcher] = field(default_factory=list)
    _only_here: frozenset[int] | None = None  # those blocks, known once the page is built
    _blocks: gr.Blocks | None = None

    def watch(self, fn: Callable[..., Any], inputs: Sequence[Any], outputs: Sequence[Any]) -> None:
        """`fn(*inputs)` runs whenever the selection changes; it returns a dict of updates or a
        value per output, as a Gradio handler would."""
        self._watchers.append(_Watcher(fn, tuple(inputs), tuple(outputs)))

    def inputs(self) -> list[Any]:
        return list(dict.fromkeys(b for w in self._watchers for b in w.inputs))

    def outputs(self) -> list[Any]:
        return list(dict.fromkeys(b for w in self._watchers for b in w.outputs))

    async def show(self, *values: Any) -> Updates:
        """Every watcher's updates, in the order they were added (a later one wins a clash),
        less those the page already shows (the last value is `sent`)."""
        *watched, before = values
        given = dict(zip(self.inputs(), watched, strict=True))
        shown: Updates = {}
        for w in self._watchers:
            args = [given[b] for b in w.inputs]
            if inspect.iscoroutinefunction(w.fn):
                result = await w.fn(*args)
            else:  # a library read: off the event loop, as Gradio runs a plain handler
                result = await asyncio.to_thread(w.fn, *args)
            shown.update(_as_updates(result, w.outputs))
        return self._news(shown, before or {})

    def _news(self, shown: Updates, before: dict[int, Any]) -> Updates:
        only_here = self._sole_outputs()
        sent = {key: value for key, value in before.items() if key in only_here}
        news: Updates = {}
        for block, value in shown.items():
            if block._id in only_here:
                if sent.get(block._id) == value:
                    continue
                sent[block._id] = value
            news[block] = value
        return {**news, self.sent: sent}

    def _sole_outputs(self) -> frozenset[int]:
        """The ids of the blocks only this event sets (found once the page is whole)."""
        if self._only_here is None:
            assert self._blocks is not None, "wire() first"
            others = {
                block._id
                for fn in self._blocks.fns.values()
                if fn.fn != self.show
                for block in fn.outputs
            }
            self._only_here = frozenset(b._id for b in self.outputs() if b._id not in others)
        return self._only_here

    def wire(self, blocks: gr.Blocks) -> None:
        """One listener for every watcher; `blocks` is the page (call once it is whole)."""
        self._blocks = blocks
        # One at a time per page, the newest last: an earlier selection (a slow conversion)
        # can never land after a later one.
        self.selected.change(
            self.show,
            [*self.inputs(), self.sent],
            [*self.outputs(), self.sent],
            trigger_mode="always_last",
            **PRIVATE,
        )


def _as_updates(result: Any, outputs: tuple[Any, ...]) -> Updates:
    if isinstance(result, dict) and all(isinstance(key, Block) for key in result):
        return result
    if len(outputs) == 1:
        return {outputs[0]: result}
    return dict(zip(outputs, result, strict=True))
