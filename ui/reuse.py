"""Follow-up actions on a finished run: use as melody, continue it, reuse its settings or seed.

The result panel and the history cards both call these with a run snapshot
(`Studio.snapshot`); each returns updates for the form only, never sends anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

from services.musicgen import COHERENT_MAX_SECONDS, MODEL_VERSIONS, GenerationRequest
from ui import form_rules
from ui.events import Updates
from ui.form_rules import USE_CONTINUATION, USE_MELODY
from ui.formatting import message_html
from ui.inputs import Form


def is_upload(path: str | None) -> bool:
    """True for a file in Gradio's upload folder, where this app's visitors' clips are kept.

    A request's clip is only put back in the form from there: a path stored in a run could
    otherwise point anywhere on the server, and Gradio would serve whatever it names.
    """
    if not path:
        return False
    try:
        resolved = Path(path).resolve()
        resolved.relative_to(Path(get_upload_folder()).resolve())
    except (OSError, ValueError):
        return False
    return resolved.is_file()


class Reuse:
    """Builds the form updates; `parent_run` remembers which run the new clip came from."""

    def __init__(self, form: Form, parent_run: gr.State, notice: gr.HTML):
        self.form = form
        self.parent_run = parent_run
        self.notice = notice

    def outputs(self) -> list[gr.components.Component]:
        """Every component an action may change."""
        return [*self.form.components(), self.parent_run, self.notice]

    def _missing(self) -> Updates:
        return {
            self.notice: message_html(
                "That run is no longer in your library (it may have been deleted).",
                kind="warning",
            )
        }

    def _no_audio(self) -> Updates:
        return {
            self.notice: message_html(
                "That run has no audio to use (it did not succeed, or its file is gone).",
                kind="warning",
            )
        }

    def as_melody(self, snap: dict[str, Any] | None, model_version: str) -> Updates:
        """The run's audio becomes the melody to follow (switching to a melody model)."""
        if snap is None:
            return self._missing()
        if not snap.get("audio_path"):
            return self._no_audio()
        controls = self.form.inputs
        return {
            controls["input_audio"]: snap["audio_path"],
            controls["continuation"]: USE_MELODY,
            controls["model_version"]: form_rules.melody_model_for(model_version),
            self.parent_run: snap["run_id"],
            self.notice: message_html(
                "The result is now the melody to follow. Describe the new arrangement in the "
                "prompt and press Generate.",
                kind="info",
            ),
        }

    def continue_from(self, snap: dict[str, Any] | None) -> Updates:
        """The run's audio becomes the clip to continue: its last seconds, then new music."""
        if snap is None:
            return self._missing()
        if not snap.get("audio_path"):
            return self._no_audio()
        controls = self.form.inputs
        start, duration = form_rules.continue_plan(snap.get("audio_seconds"))
        start_max, end_max = form_rules.clip_bounds(snap.get("audio_seconds"))
        return {
            controls["input_audio"]: snap["audio_path"],
            controls["continuation"]: USE_CONTINUATION,
            controls["continuation_start"]: gr.update(value=start, maximum=start_max),
            controls["continuation_end"]: gr.update(value=end_max, maximum=end_max),
            self.form.to_end: True,
            controls["duration"]: duration,
            self.parent_run: snap["run_id"],
            self.notice: message_html(
                f"Ready to continue the result from {start} s to its end: the new piece starts "
                f"with that part and lasts {duration} s in total. Press Generate.",
                kind="info",
            ),
        }

    def settings(self, snap: dict[str, Any] | None) -> Updates:
        """Every setting of the run back in the form (its clip too, while the file exists)."""
        if snap is None:
            return self._missing()
        f = self.form
        req = GenerationRequest.from_dict(snap.get("request") or {})
        clip = snap.get("input_audio_path") or (
            req.input_audio if is_upload(req.input_audio) else None
        )
        page = form_rules.page_values(req)
        maximum, _, info = form_rules.duration_limits(page.long_mode, req.duration)
        note = "Settings restored from that run."
        if req.input_audio and clip is None:
            note += " Its input clip is no longer on this server: add it again if you need it."
        # Every input back in its control, by name; then what the rules bound to a range.
        updates: Updates = dict(zip(f.components(), page.ordered(), strict=True))
        controls = f.inputs
        updates |= {
            # A local run's checkpoint is not one of Replicate's models: that radio keeps its value.
            controls["model_version"]: (
                req.model_version if req.model_version in MODEL_VERSIONS else gr.update()
            ),
            controls["duration"]: gr.update(value=req.duration, maximum=maximum, info=info),
            controls["input_audio"]: clip,
            controls["continuation_start"]: gr.update(
                value=req.continuation_start,
                maximum=max(COHERENT_MAX_SECONDS, req.continuation_start),
            ),
            # Until the end of the clip: the end slider keeps its range (it may be the clip's).
            controls["continuation_end"]: gr.update()
            if req.continuation_end is None
            else gr.update(
                value=req.continuation_end,
                maximum=max(COHERENT_MAX_SECONDS, req.continuation_end),
            ),
            self.parent_run: None,
            self.notice: message_html(note, kind="info"),
        }
        return updates

    def seed(self, snap: dict[str, Any] | None) -> Updates:
        """Fix the seed the run used, to vary the other settings around the same result."""
        if snap is None:
            return self._missing()
        if snap.get("seed") is None:
            return {
                self.notice: message_html(
                    "That run did not report its seed, so it cannot be reused.", kind="warning"
                )
            }
        return {
            self.form.random_seed: False,
            self.form.inputs["seed"]: snap["seed"],
            self.notice: message_html(f"Seed fixed to {snap['seed']}.", kind="info"),
        }
