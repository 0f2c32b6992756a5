"""Download any result as wav, mp3 or flac: three small buttons, a file named for what it is.

The conversion is made on demand (and cached) by `services.compose.formats`; the file handed to
Gradio is a link (or copy) in a per-request staging folder whose name says what it is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any

import gradio as gr

from services.compose.formats import FORMATS, FormatCache
from services.errors import StudioError
from services.library import RunRecord
from ui.context import Studio
from ui.formatting import esc, message_html

PRIVATE: Mapping[str, Any] = MappingProxyType(
    {"api_visibility": "private", "show_progress": "hidden"}
)
CHOICES_SHOWN = 100


@dataclass
class FormatButtons:
    buttons: dict[str, gr.Button]
    file: gr.File
    notice: gr.HTML


def run_id_of(value: Any) -> str | None:
    """The library id in a run snapshot ({"run_id": ...}), a picker's value, or None."""
    if isinstance(value, Mapping):
        value = value.get("run_id")
    return value.strip() or None if isinstance(value, str) else None


def entry_label(record: RunRecord) -> str:
    """How a library entry reads in a picker: prompt, kind, seed, date, short id."""
    prompt = record.prompt or "(no prompt)"
    prompt = prompt if len(prompt) <= 48 else prompt[:47] + "…"
    parts = [prompt]
    if record.kind != "take":
        parts.append(record.kind)
    if record.seed is not None:
        parts.append(f"seed {record.seed}")
    parts.append(time.strftime("%Y-%m-%d %H:%M", time.localtime(record.created_at)))
    parts.append(record.id[:6])
    return " · ".join(parts)


def entry_choices(studio: Studio, owner: str | None) -> list[tuple[str, str]]:
    """The visitor's entries that hold audio (takes, loops, pieces, variations), newest first."""
    page = studio.library.list(owner, per_page=CHOICES_SHOWN, status="succeeded", inner=True)
    return [(entry_label(r), r.id) for r in page.items if r.has_audio]


class FormatHandlers:
    """Converts and hands out one entry's audio; limited to the visitor's own entries."""

    def __init__(self, studio: Studio):
        self.studio = studio
        self.cache = FormatCache(studio.library)

    async def download(self, fmt: str, run_value: Any, owner_value: Any) -> tuple[Any, str]:
        run_id = run_id_of(run_value)
        record = self.studio.library.get(run_id, self.studio.owner(owner_value)) if run_id else None
        if record is None or not record.has_audio:
            return gr.update(visible=False), message_html(
                "Choose a result with audio first.", kind="warning"
            )
        folder = self.studio.files.staging_dir()
        try:
            path = await asyncio.to_thread(self.cache.deliver, record, fmt, folder)
        except StudioError as err:
            return gr.update(visible=False), message_html(str(err))
        return (
            gr.update(value=str(path), visible=True, label=f"Download .{fmt}"),
            f'<div class="ms-clip-info" data-file="{esc(path.name)}">{esc(path.name)}</div>',
        )


def build_format_buttons(
    studio: Studio, *, owner: gr.components.Component, run: gr.components.Component, prefix: str
) -> FormatButtons:
    """Three small buttons (wav / mp3 / flac) for the entry `run` holds (a snapshot or an id),
    with the file they make; element ids start with `prefix`."""
    handlers = FormatHandlers(studio)
    buttons: dict[str, gr.Button] = {}
    with gr.Row(elem_classes=["ms-formats"], elem_id=f"{prefix}-formats"):
        gr.HTML('<span class="ms-clip-info">Download as</span>', elem_classes=["ms-formats-lead"])
        for fmt in FORMATS:
            buttons[fmt] = gr.Button(fmt, size="sm", elem_id=f"{prefix}-as-{fmt}", min_width=60)
    notice = gr.HTML("", elem_id=f"{prefix}-format-notice")
    file = gr.File(
        label="Download", visible=False, interactive=False, elem_id=f"{prefix}-format-file"
    )
    for fmt, button in buttons.items():
        button.click(partial(handlers.download, fmt), [run, owner], [file, notice], **PRIVATE)
    return FormatButtons(buttons=buttons, file=file, notice=notice)


def build_library_formats(
    studio: Studio, *, owner: gr.components.Component, history_state: gr.State
) -> FormatButtons:
    """Any entry of the history in any format: a picker and the three buttons."""
    with gr.Accordion("Download a result as wav, mp3 or flac", open=False, elem_id="formats-box"):
        picker = gr.Dropdown(
            label="Result", choices=[], value=None, elem_id="formats-entry", interactive=True
        )
        view = build_format_buttons(studio, owner=owner, run=picker, prefix="entry")

    def refresh(owner_value: Any, current: str | None) -> Any:
        choices = entry_choices(studio, studio.owner(owner_value))
        keep = current if any(value == current for _, value in choices) else None
        return gr.update(choices=choices, value=keep)

    history_state.change(refresh, [owner, picker], [picker], **PRIVATE)
    return view
