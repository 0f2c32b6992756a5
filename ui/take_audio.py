"""A gr.Audio for the studio's own files, which spares Gradio an ffprobe per file shown.

Gradio's Audio runs ffprobe on every file path it sends out, to learn whether a browser can
play it (about 70 ms of CPU in a process of its own, per take). The studio's takes are WAV or
MP3 files it wrote or checked itself, so their header says as much without a process; a file
whose header does not (anything else) still goes through Gradio's own check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
from gradio.data_classes import FileData

from services.audio import plays_as_is
from ui.schema_once import class_api_info


class TakeAudio(gr.Audio):
    """gr.Audio, drawn by Gradio's own audio player (a template of it)."""

    is_template = True

    def api_info(self) -> dict[str, Any]:
        return class_api_info(self, super().api_info)

    def postprocess(self, value: Any) -> FileData | bytes | None:
        if (
            isinstance(value, (str, Path))
            and self.format is None
            and not str(value).startswith(("http://", "https://"))
            and plays_as_is(value)
        ):
            return FileData(path=str(value), orig_name=Path(value).name)
        return super().postprocess(value)
