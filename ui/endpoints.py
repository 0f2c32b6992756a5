"""Every named endpoint of the studio, in one place (also MCP tools).

`/generate` (ui.api), `/extend`, `/variations` and `/arrange` (ui.compose_api), `/loop`
(below), `/stems` and `/midi` (ui.track_api) are registered by `build_endpoints`, and only
there; the page's own events are all private (see `ui.events`). A new endpoint is added to
`ENDPOINTS` and built in `build_endpoints`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import gradio as gr

from services.compose.arrange import Arranger
from services.compose.extend import Extender
from services.compose.formats import FormatCache
from services.compose.loop import BARS_MAX, BARS_MIN, BPM_MAX, BPM_MIN, LoopMaker, loop_summary
from services.compose.variations import Variations
from services.input_help import docstring
from ui.api import (
    REQUEST_PARAMETERS,
    api_errors,
    api_record,
    build_api,
    model_input_components,
    request_endpoint,
    token_components,
)
from ui.compose_api import build_compose_api
from ui.context import Studio
from ui.take_audio import TakeAudio
from ui.track_api import build_track_api
from ui.track_tools import TrackServices

# The named endpoints, as callers (gradio_client, MCP) know them.
ENDPOINTS = ("generate", "extend", "variations", "arrange", "loop", "stems", "midi")

LOOP_DESCRIPTION = (
    "A seamless loop for a DAW: /generate's parameters plus `bpm` (40-240) and `bars` (1-16, "
    "4/4). The tempo is written into the prompt and the take is as long as the bars need "
    "(`duration` is ignored; at most 30 s). Returns the loop (WAV, exactly bars x 4 x 60 / bpm "
    "seconds, its wrap-around blended) named with its bpm and bars, and its record (kind "
    "loop, compose: bpm, bars, source_run)."
)


class LoopApi:
    """`loop(...)`: /generate's parameters plus `bpm` and `bars`."""

    def __init__(self, studio: Studio):
        self.studio = studio
        self.maker = LoopMaker(studio.service, studio.library)
        self.cache = FormatCache(studio.library)

    async def loop(self, named: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """Make a loop to its end; returns (the loop's WAV named with bpm and bars, record)."""
        raw = {name: named.get(name) for name in REQUEST_PARAMETERS}
        bpm, bars, api_token = named.get("bpm"), named.get("bars"), named.get("api_token")
        visitor = self.studio.api_visitor()
        owner = visitor.owner
        engine = named.get("engine")
        last = None
        with api_errors():
            request, spec = await asyncio.to_thread(self.maker.prepare, raw, bpm, bars, engine)
            async for update in self.maker.make(
                request,
                spec,
                token=self.studio.token(api_token),
                owner=owner,
                engine=engine,
                payer=visitor.payer,
            ):
                last = update
        if last is None or last.run_id is None:
            raise gr.Error("The loop ended without a result.")
        record = api_record(
            loop_summary(self.studio.service, self.studio.library, last.run_id, owner), owner
        )
        entry = self.studio.library.get(last.run_id, owner)
        if entry is None or not entry.has_audio:
            return None, record
        loop_file = await asyncio.to_thread(
            self.cache.deliver, entry, "wav", self.studio.files.staging_dir()
        )
        record["file_name"] = loop_file.name
        return str(loop_file), record


LOOP_DOC = docstring(
    "Make a seamless loop for a DAW: a take at the given tempo, cut to whole 4/4 bars on a "
    "downbeat, its end blended into its start. Refused inputs raise an error naming each "
    "field; nothing is sent then.",
    [*REQUEST_PARAMETERS, "engine", "bpm", "bars", "api_token"],
    {
        "duration": "Ignored: the take is as long as the bars need (at most 30 s).",
        "output_format": "Ignored for the loop itself, which is always WAV (sample-exact).",
        "bpm": f"The tempo in beats per minute, from {BPM_MIN:g} to {BPM_MAX:g}.",
        "bars": f"How many bars of 4/4, a whole number from {BARS_MIN} to {BARS_MAX}.",
    },
    "The loop's WAV file (named with its bpm and bars), and its record: library_id, status, "
    "seed, bpm, bars, source_run (the raw take), compose, file_name, error.",
)


def build_loop_api(studio: Studio) -> None:
    """Hidden inputs and outputs of `/loop`: /generate's, then `bpm` and `bars`."""
    api = LoopApi(studio)
    with gr.Column(visible=False):
        inputs = [
            *model_input_components(),
            # No minimum/maximum: our validation then names the field in its refusal.
            gr.Number(120, label="bpm", info="40-240"),
            gr.Number(2, label="bars", info="1-16 bars of 4/4"),
            *token_components(studio),
        ]
        outputs = [TakeAudio(label="loop", type="filepath"), gr.JSON(label="record")]
    gr.on(
        triggers=[],
        fn=request_endpoint(api.loop, {"bpm": None, "bars": None}, LOOP_DOC),
        inputs=inputs,
        outputs=outputs,
        api_name="loop",
        api_description=LOOP_DESCRIPTION,
        show_progress="hidden",
    )


def build_endpoints(
    studio: Studio,
    extender: Extender,
    variations: Variations,
    arranger: Arranger,
    tracks: TrackServices,
) -> None:
    """Register every named endpoint (inside the page's Blocks, hidden)."""
    build_api(studio)
    build_compose_api(studio, extender, variations, arranger)
    build_loop_api(studio)
    build_track_api(studio, tracks)
