"""The studio page: form, run panel, history gallery and the `/generate` endpoint, wired up."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import gradio as gr

from services.compose.arrange import Arranger
from services.compose.extend import Extender
from services.compose.variations import Variations
from services.generation import GenerationService
from services.library import Library
from services.settings import DEFAULT_BASE_URL, Settings
from ui import assets
from ui.api import build_api
from ui.compare import build_compare
from ui.compose_api import build_compose_api
from ui.compose_arrange import ArrangeHandlers, build_arrange, wire_arrange
from ui.compose_extend import ExtendHandlers, build_extend, wire_extend
from ui.compose_loop import build_loop, build_loop_api, wire_loop
from ui.compose_variations import VariationsHandlers, build_variations, wire_variations
from ui.context import Studio
from ui.cost_line import build_cost_line, wire_cost_line
from ui.engine_picker import build_engine_picker, wire_engine_picker
from ui.files import serve_library
from ui.form_events import wire_form
from ui.formats import build_format_buttons, build_library_formats
from ui.formatting import message_html, token_banner_html
from ui.history import HistoryHandlers, build_history_view, import_allowed, render_cards
from ui.identity import ensure_identity
from ui.inputs import build_form
from ui.reuse import Reuse
from ui.run_panel import build_controls, build_run_view
from ui.runs import RunHandlers
from ui.stem_mixer import MIXER_CSS, MIXER_HEAD
from ui.track_api import build_track_api
from ui.track_tools import (
    TrackServices,
    TrackToolsHandlers,
    build_track_tools,
    wire_track_tools,
)

OWNER_KEY = "musicgen-studio.owner"
# BrowserState encrypts with this in the browser. It is sent to every browser in the page's
# config, so it is no secret; it only has to stay the same across restarts, or every visitor
# would lose their identity (and so their history) whenever the app restarts.
OWNER_SECRET = "musicgen-studio-owner-v1"
GENERATION_CONCURRENCY = 32  # runs mostly wait on Replicate: many may be in flight at once
PRIVATE: Mapping[str, Any] = MappingProxyType(
    {"api_visibility": "private", "show_progress": "hidden"}
)

HEADER = (
    '<div class="ms-header"><h1>MusicGen Studio</h1><p>Make music from a description, a '
    "melody or a clip to continue, with Meta's MusicGen: on this machine or on Replicate. "
    "Extend a take into a longer piece, or make several variations at once. Every result is "
    "kept in your history below.</p></div>"
)


def build(settings: Settings, service: GenerationService, library: Library) -> gr.Blocks:
    """The whole page; launch it with `launch_options(settings)`."""
    files = serve_library(library.served_dirs)  # played in place, never copied
    studio = Studio(settings=settings, service=service, library=library, files=files)
    with gr.Blocks(title="MusicGen Studio") as demo:
        owner = gr.BrowserState("", storage_key=OWNER_KEY, secret=OWNER_SECRET)
        clip_seconds = gr.State(None)
        parent_run = gr.State(None)
        gr.HTML(HEADER)
        if settings.sign_in:  # a Space with `hf_oauth: true`: the account is the visitor
            gr.LoginButton(elem_id="sign-in")
        if settings.base_url != DEFAULT_BASE_URL:
            gr.HTML(
                message_html(
                    f"Runs go to {settings.base_url}, not to Replicate itself "
                    "(REPLICATE_BASE_URL is set, e.g. to the offline emulator).",
                    kind="info",
                ),
                elem_id="base-url-note",
            )
        token: gr.components.Component
        local = service.engines.local is not None
        banner_html = token_banner_html(True, local=local)
        if not service.engines.needs_visitor_token:
            token = gr.State(None)
        else:
            banner = gr.HTML(banner_html, elem_id="token-banner")
            with gr.Row():
                token = gr.Textbox(
                    label="Your Replicate API token",
                    info="Kept only in this browser (never stored on the server). "
                    "Runs are billed to your Replicate account.",
                    type="password",
                    placeholder="r8_…",
                    elem_id="token-box",
                    scale=4,
                )
                forget = gr.Button("Forget token", size="sm", elem_id="forget-token", scale=1)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=320):
                notice = gr.HTML("", elem_id="form-notice")
                picker = build_engine_picker(service.engines)
                form = build_form()
                # Replicate's models only show while Replicate is the chosen engine.
                form.model_version.visible = not picker.local_model.visible
                loop_view = build_loop(studio, owner=owner)
            with gr.Column(scale=2, min_width=320):
                controls = build_controls()
                cost = build_cost_line(
                    studio, picker.engine.value, form.model_version.value, form.duration.value
                )
                view = build_run_view()
                build_format_buttons(studio, owner=owner, run=view.last_run, prefix="result")
                extend_view = build_extend(studio)
                arrange_view = build_arrange(studio)
                track_view = build_track_tools()
        variations_view = build_variations()
        gr.HTML('<h2 id="history-title">History</h2>')
        history_view = build_history_view(can_import=import_allowed(studio))

        reuse = Reuse(form, parent_run, notice)
        runs = RunHandlers(studio, controls, view)
        history = HistoryHandlers(studio, history_view, reuse)
        listing_inputs = [owner, history_view.search, history_view.favourites_only]
        listing_outputs = history.listing_outputs()
        current = [*listing_inputs, history_view.state]

        @gr.render(inputs=[history_view.state], triggers=[history_view.state.change])
        def _cards(state: dict | None) -> None:
            render_cards(
                history,
                state,
                owner=owner,
                model_version=form.model_version,
                search=history_view.search,
                favourites_only=history_view.favourites_only,
                extend_target=(view.last_run, extend_view.panel),
                track_target=(view.last_run, track_view.panel),
            )

        _, keeps = build_compare(studio, owner=owner, history_state=history_view.state)
        build_library_formats(studio, owner=owner, history_state=history_view.state)

        build_api(studio)
        extender = Extender(service, library, settings.data_dir)
        variations = Variations(service, library)
        arranger = Arranger(service, library, settings.data_dir)
        build_compose_api(studio, extender, variations, arranger)
        build_loop_api(studio)
        tracks = TrackServices.for_studio(studio)
        build_track_api(studio, tracks)

        # -- page load: the visitor's identity (shared mode), their history, their token
        def on_load(owner_value: Any, search: str, fav: bool) -> tuple[Any, ...]:
            identity = ensure_identity(owner_value) if settings.shared else ""
            return (identity, *history.first(identity, search, fav))

        loaded = demo.load(on_load, listing_inputs, [owner, *listing_outputs], **PRIVATE)
        if service.engines.needs_visitor_token:
            demo.load(None, None, [token, banner], js=assets.token_load_js(banner_html))
            token.change(None, [token], [banner], js=assets.token_save_js(banner_html))
            forget.click(None, None, [token, banner], js=assets.token_forget_js(banner_html))
            # Runs left in flight by an earlier start continue with the visitor's own token
            # when they come back (or paste it).
            for event in (loaded.then, token.change):
                event(
                    runs.resume_mine, [owner, token], None, trigger_mode="always_last", **PRIVATE
                ).then(history.same, current, listing_outputs, **PRIVATE)

        wire_form(form, clip_seconds, parent_run)
        wire_engine_picker(picker, form.model_version, service.engines)
        wire_cost_line(
            studio, cost, [picker.engine, form.model_version, form.duration], [demo.load]
        )

        # -- generate and cancel
        generation = controls.generate.click(
            runs.generate,
            [owner, token, parent_run, picker.engine, picker.local_model, *form.components()],
            runs.outputs(),
            concurrency_limit=GENERATION_CONCURRENCY,
            concurrency_id="generation",
            trigger_mode="once",
            **PRIVATE,
        )
        generation.then(history.same, current, listing_outputs, **PRIVATE)

        # -- composing: a longer piece from the result, variations of the form's request
        extending = wire_extend(
            ExtendHandlers(studio, extend_view, extender, view.last_run), owner=owner, token=token
        )
        takes = wire_variations(
            VariationsHandlers(studio, variations_view, variations),
            owner=owner,
            token=token,
            run_inputs=[picker.engine, picker.local_model, *form.components()],
            reuse=reuse,
            model_version=form.model_version,
            last_run=view.last_run,
        )
        arranging = wire_arrange(
            ArrangeHandlers(studio, arrange_view, arranger, view.last_run),
            owner=owner,
            token=token,
            run_inputs=[picker.engine, picker.local_model, *form.components()],
            engine=picker.engine,
            model_version=form.model_version,
        )
        for event in [*extending, *takes, *arranging]:
            event.then(history.same, current, listing_outputs, **PRIVATE)
        looping = wire_loop(
            studio,
            loop_view,
            owner=owner,
            token=token,
            run_inputs=[picker.engine, picker.local_model, *form.components()],
        )
        # -- from take to track: stems, MIDI and a DAW bundle of the result shown
        wire_track_tools(
            TrackToolsHandlers(studio, tracks, track_view),
            run=view.last_run,
            owner=owner,
            reuse=reuse,
            model_version=form.model_version,
        )
        for event in (looping, *keeps):
            event.then(history.same, current, listing_outputs, **PRIVATE)
        # The browser sends Gradio's cancel only once the Cancel click's own handler has
        # returned, so that handler is instant; waiting for the run to settle comes after.
        controls.cancel.click(
            runs.cancel_pressed,
            [view.current_run, owner],
            [view.status, controls.cancel],
            cancels=[generation],
            queue=False,
            **PRIVATE,
        ).then(
            runs.after_cancel,
            [view.current_run, owner],
            [view.status, view.current_run, controls.generate, controls.cancel],
            **PRIVATE,
        ).then(history.same, current, listing_outputs, **PRIVATE)

        # -- the result's follow-up actions
        to_form = {"fn": None, "js": assets.SCROLL_TO_FORM_JS}
        view.use_as_melody.click(
            reuse.as_melody, [view.last_run, form.model_version], reuse.outputs(), **PRIVATE
        ).then(**to_form)
        view.continue_this.click(
            reuse.continue_from, [view.last_run], reuse.outputs(), **PRIVATE
        ).then(**to_form)
        view.reuse_settings.click(reuse.settings, [view.last_run], reuse.outputs(), **PRIVATE).then(
            **to_form
        )
        view.reuse_seed.click(reuse.seed, [view.last_run], reuse.outputs(), **PRIVATE)

        # -- history
        hv = history_view
        hv.search.submit(history.first, listing_inputs, listing_outputs, **PRIVATE)
        hv.search.input(
            history.first, listing_inputs, listing_outputs, trigger_mode="always_last", **PRIVATE
        )
        hv.favourites_only.input(history.first, listing_inputs, listing_outputs, **PRIVATE)
        hv.refresh.click(history.same, current, listing_outputs, **PRIVATE)
        hv.timer.tick(history.tick, [*current, hv.seen], [*listing_outputs, hv.seen], **PRIVATE)
        hv.previous.click(history.newer, current, listing_outputs, **PRIVATE)
        hv.next.click(history.older, current, listing_outputs, **PRIVATE)
        hv.import_runs.click(history.import_runs, [owner, token], [hv.notice], **PRIVATE).then(
            history.same, current, listing_outputs, **PRIVATE
        )
        hv.confirm_delete.click(
            history.confirm_delete,
            [hv.pending_delete, owner],
            [hv.pending_delete, hv.confirm_row, hv.notice],
            **PRIVATE,
        ).then(history.same, current, listing_outputs, **PRIVATE)
        hv.keep.click(history.keep, None, [hv.pending_delete, hv.confirm_row], **PRIVATE)
    return demo


def launch_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `demo.launch()` (Gradio 6 takes css/head there)."""
    return {
        "css": assets.CSS + MIXER_CSS,
        "head": assets.HEAD + MIXER_HEAD,
        "max_file_size": "100mb",
        "footer_links": ["api", "gradio"],
        # Gradio's run history would keep every call's inputs (a pasted token among them).
        "run_history": False,
        # The named endpoints as MCP tools (/gradio_api/mcp/), for assistants: gradio[mcp].
        "mcp_server": importlib.util.find_spec("mcp") is not None,
    }
