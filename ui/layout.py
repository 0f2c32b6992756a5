"""The studio page, laid out for a musician: the prompt and Generate first, beside the track
(the current take, with all its actions); the engine, settings and composing panels below; then
the history by kind and A/B compare. Named endpoints: `ui.endpoints`."""

from __future__ import annotations

import importlib.util
from typing import Any

import gradio as gr

from services.compose.arrange import Arranger
from services.compose.extend import Extender
from services.compose.variations import Variations
from services.engines.protocol import LOCAL
from services.generation import GenerationService
from services.library import Library
from services.settings import DEFAULT_BASE_URL, Settings
from ui import assets
from ui.compare import build_compare
from ui.compose_arrange import ArrangeHandlers, build_arrange, wire_arrange
from ui.compose_extend import ExtendHandlers, build_extend, wire_extend
from ui.compose_loop import build_loop, wire_loop
from ui.compose_variations import VariationsHandlers, build_variations, wire_variations
from ui.context import Studio
from ui.cost_line import build_cost_line, wire_cost_line
from ui.endpoints import build_endpoints
from ui.engine_picker import LOCAL_MBD, build_engine_picker, wire_engine_picker
from ui.events import PRIVATE, QUICK, Updates
from ui.files import serve_library
from ui.form_events import wire_form
from ui.form_rules import FormValues
from ui.formatting import message_html, token_banner_html
from ui.history import HistoryHandlers, build_history_view, import_allowed
from ui.history_cards import CardActions, CardTargets, wire_cards
from ui.identity import ensure_identity
from ui.inputs import build_form, build_prompt
from ui.reuse import Reuse
from ui.run_panel import build_controls, build_run_view
from ui.run_slots import queue_workers, run_slots
from ui.run_stream import Afterwards, wire_stream
from ui.runs import RunHandlers
from ui.selection import Selection
from ui.stem_mixer import MIXER_CSS, MIXER_HEAD
from ui.studio_blocks import StudioBlocks
from ui.track import (
    EXTRA_PANELS,
    PendingDeletes,
    TrackHandlers,
    TrackSeam,
    build_extras,
    build_undo_bar,
    wire_track,
)
from ui.track_tools import (
    TrackServices,
    TrackToolsHandlers,
    TrackToolsView,
    build_track_tools,
    wire_track_tools,
)

OWNER_KEY = "musicgen-studio.owner"
# BrowserState encrypts with this in the browser. It is sent to every browser in the page's
# config, so it is no secret; it only has to stay the same across restarts, or every visitor
# would lose their identity (and so their history) whenever the app restarts.
OWNER_SECRET = "musicgen-studio-owner-v1"

HEADER = (
    '<div class="ms-header"><h1>MusicGen Studio</h1><p>Describe the music, press Generate: '
    "Meta's MusicGen makes it, on this machine or on Replicate. Every result is kept in your "
    "history below.</p></div>"
)


def engine_label(engine: str | None) -> str:
    """The Engine section's title says what is chosen, so it can stay closed."""
    return f"Engine: {'This machine' if engine == LOCAL else 'Replicate'}"


def engine_needed(needs_token: bool, engine: str | None, token: Any) -> bool:
    """The Engine section opens only when a run could not start: Replicate with no token."""
    return needs_token and engine != LOCAL and not (isinstance(token, str) and token.strip())


def build(settings: Settings, service: GenerationService, library: Library) -> gr.Blocks:
    """The whole page; launch it with `launch_options(settings)`."""
    files = serve_library(library.served_dirs)  # played in place, never copied
    studio = Studio(settings=settings, service=service, library=library, files=files)
    engines = service.engines
    needs_token = engines.needs_visitor_token
    local = engines.local is not None
    banner_html = token_banner_html(True, local=local)
    deletes = PendingDeletes(studio)
    demo = StudioBlocks(title="MusicGen Studio")
    with demo:
        owner = gr.BrowserState("", storage_key=OWNER_KEY, secret=OWNER_SECRET)
        clip_seconds = gr.State(None)
        parent_run = gr.State(None)
        gr.HTML(HEADER)
        if settings.sign_in:  # a Space with `hf_oauth: true`: the account is the visitor
            gr.LoginButton(elem_id="sign-in")
        # -- first screen: the prompt and Generate beside the track (the current take)
        with gr.Row(equal_height=False, elem_id="studio-top"):
            with gr.Column(scale=3, min_width=320, elem_id="compose-col"):
                notice = gr.HTML("", elem_id="form-notice")
                prompt = build_prompt()
                controls = build_controls()
                start = FormValues()
                cost = build_cost_line(
                    studio,
                    engines.default_name(),
                    start.inputs["model_version"],
                    start.inputs["duration"],
                )
                default = engines.default_name()
                with gr.Accordion(
                    engine_label(default),
                    open=engine_needed(needs_token, default, None),
                    elem_id="engine-box",
                ) as engine_box:
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
                    if not needs_token:
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
                            forget = gr.Button(
                                "Forget token", size="sm", elem_id="forget-token", scale=1
                            )
                    picker = build_engine_picker(engines)
            with gr.Column(scale=2, min_width=320, elem_id="track-col"):
                view = build_run_view()
                extras_at = gr.Column(elem_id="track-extras-slot")
        # -- everything else: the engine, the settings, the composing panels
        with gr.Row(equal_height=False, elem_id="studio-settings"):
            with gr.Column(scale=3, min_width=320):
                form = build_form(prompt)
                # Replicate's models only show while Replicate is the chosen engine.
                model_version = form.control("model_version", gr.Radio)
                model_version.visible = not picker.local_model.visible
                if default == LOCAL:  # multi-band diffusion is Replicate's only
                    form.inputs["multi_band_diffusion"].info = LOCAL_MBD
                    form.inputs["multi_band_diffusion"].interactive = False
                loop_view = build_loop()
            with gr.Column(scale=2, min_width=320):
                extend_view = build_extend()
                arrange_view = build_arrange(studio)
                variations_view = build_variations()
        gr.HTML('<h2 id="history-title">History</h2>')
        history_view = build_history_view(can_import=import_allowed(studio))
        undo_bar = build_undo_bar()

        reuse = Reuse(form, parent_run, notice)
        runs = RunHandlers(studio, controls, view)
        history = HistoryHandlers(studio, history_view, reuse, deletes.hidden)
        track = TrackHandlers(studio, view.track, view.actions, undo_bar, view.last_run, deletes)
        listing_inputs = [owner, history_view.search, history_view.favourites_only]
        listing_outputs = history.listing_outputs()
        current = [*listing_inputs, history_view.state]

        def refresh_after(events: list[Any]) -> None:
            for event in events:
                event.then(history.same, current, listing_outputs, **PRIVATE)

        _, keeps = build_compare(studio, owner=owner, hidden=deletes.hidden)
        extender = Extender(service, library, settings.data_dir)
        variations = Variations(service, library)
        arranger = Arranger(service, library, settings.data_dir)
        tracks = TrackServices.for_studio(studio)
        build_endpoints(studio, extender, variations, arranger, tracks)

        # -- the selected result: shown in the track; its extra panels plug in there
        tools: list[TrackToolsView] = []
        selection = Selection(view.last_run)

        def stems_and_midi(seam: TrackSeam) -> list[Any]:
            """From take to track: stems, MIDI and a DAW bundle of the selected result."""
            tools.append(build_track_tools())
            wire_track_tools(
                TrackToolsHandlers(seam.studio, tracks, tools[0]),
                selection=selection,
                run=seam.selected,
                owner=seam.owner,
                reuse=reuse,
                model_version=model_version,
            )
            return []  # a split or a transcription adds no history entry of its own

        with extras_at:
            seam = TrackSeam(studio, view.last_run, owner, token)
            refresh_after(build_extras(seam, (*EXTRA_PANELS, stems_and_midi)))
        refresh_after(wire_track(track, owner, selection))

        targets = CardTargets(selected=view.last_run, track_tools=tools[0].panel)
        wire_cards(CardActions(history, track, targets), history_view.cards, owner, current[1:])

        # -- page load: the visitor's identity (shared mode), their history, their latest result
        def on_load(owner_value: Any, search: str, fav: bool) -> Updates:
            identity = ensure_identity(owner_value) if settings.shared else ""
            listing: Updates = dict(
                zip(listing_outputs, history.first(identity, search, fav), strict=True)
            )
            # The latest result becomes the selection: the track and its panels show it.
            return {owner: identity, view.last_run: track.latest(identity), **listing}

        loaded = demo.load(
            on_load, listing_inputs, [owner, view.last_run, *listing_outputs], **PRIVATE
        )
        if needs_token:
            demo.load(None, None, [token, banner], js=assets.token_load_js(banner_html))
            token.change(None, [token], [banner], js=assets.token_save_js(banner_html))
            forget.click(None, None, [token, banner], js=assets.token_forget_js(banner_html))
            # Runs left in flight by an earlier start continue with the visitor's own token
            # when they come back (or paste it).
            for event in (loaded.then, token.change):
                event(
                    runs.resume_mine, [owner, token], None, trigger_mode="always_last", **PRIVATE
                ).then(history.same, current, listing_outputs, **PRIVATE)

        def engine_box_state(engine: str | None, token_value: Any) -> Any:
            return gr.update(
                label=engine_label(engine),
                open=engine_needed(needs_token, engine, token_value),
            )

        engine_triggers = [picker.engine.change]
        if needs_token:
            engine_triggers.append(token.change)
        gr.on(engine_triggers, engine_box_state, [picker.engine, token], [engine_box], **QUICK)

        wire_form(form, clip_seconds, parent_run)
        wire_engine_picker(picker, model_version, form.inputs["multi_band_diffusion"], engines)
        wire_cost_line(
            studio,
            cost,
            [picker.engine, model_version, form.inputs["duration"]],
            [demo.load],
        )

        # -- generate and cancel
        run_inputs = [picker.engine, picker.local_model, *form.components()]
        _, stopped = wire_stream(
            runs.buttons,
            runs.generate,
            [owner, token, parent_run, *run_inputs],
            runs.outputs(),
            **run_slots(settings),
            # The browser sends Gradio's cancel only once this handler has returned, so it is
            # instant; waiting for the run to settle comes after.
            stop=(runs.cancel_pressed, [view.current_run, owner]),
            after_stop=(runs.after_cancel, [view.current_run, owner]),
            afterwards=Afterwards(history.same, current, listing_outputs),
        )
        refresh_after([stopped])  # a canceled run's stream ends before its entry is filed

        # -- composing: a longer piece from the result, variations and loops of the form
        refresh_after(
            wire_extend(
                ExtendHandlers(studio, extend_view, extender, view.last_run),
                selection=selection,
                owner=owner,
                token=token,
            )
        )
        refresh_after(
            wire_arrange(
                ArrangeHandlers(studio, arrange_view, arranger, view.last_run),
                selection=selection,
                owner=owner,
                token=token,
                run_inputs=run_inputs,
                engine=picker.engine,
                model_version=model_version,
            )
        )
        refresh_after(
            wire_variations(
                VariationsHandlers(studio, variations_view, variations),
                owner=owner,
                token=token,
                run_inputs=run_inputs,
                reuse=reuse,
                model_version=model_version,
                last_run=view.last_run,
            )
        )
        refresh_after(
            wire_loop(
                studio,
                loop_view,
                owner=owner,
                token=token,
                run_inputs=run_inputs,
                selected=view.last_run,
            )
        )
        refresh_after(keeps)
        selection.wire(demo)  # every panel that shows the selected result is wired by now

        # -- the selected result's actions (all in the track)
        a = view.actions
        to_form = {"fn": None, "js": assets.SCROLL_TO_FORM_JS}
        a.use_as_melody.click(
            reuse.as_melody,
            [view.last_run, model_version],
            reuse.outputs(),
            **PRIVATE,
        ).then(**to_form)
        a.continue_this.click(
            reuse.continue_from, [view.last_run], reuse.outputs(), **PRIVATE
        ).then(**to_form)
        a.reuse_settings.click(reuse.settings, [view.last_run], reuse.outputs(), **PRIVATE).then(
            **to_form
        )
        a.reuse_seed.click(reuse.seed, [view.last_run], reuse.outputs(), **PRIVATE)
        opened = {"fn": lambda: gr.update(open=True), "inputs": None, **QUICK}
        a.extend.click(outputs=[extend_view.panel], **opened).then(
            None, js=assets.scroll_to_js("extend-panel")
        )
        for button, panel, elem_id in (
            (a.loop, loop_view.panel, "loop-box"),
            (a.variations, variations_view.panel, "variations-panel"),
        ):
            button.click(reuse.settings, [view.last_run], reuse.outputs(), **PRIVATE).then(
                outputs=[panel], **opened
            ).then(None, js=assets.scroll_to_js(elem_id))

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
    return demo


def launch_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `demo.launch()` (Gradio 6 takes css/head there)."""
    return {
        "css": assets.CSS + MIXER_CSS,
        "head": assets.HEAD + MIXER_HEAD,
        "max_file_size": "100mb",
        # Queue workers for the run slots (many Replicate runs at once) and every other event.
        "max_threads": queue_workers(settings),
        "footer_links": ["api", "gradio"],
        # Gradio's run history would keep every call's inputs (a pasted token among them).
        "run_history": False,
        # The named endpoints as MCP tools (/gradio_api/mcp/), for assistants: gradio[mcp].
        "mcp_server": importlib.util.find_spec("mcp") is not None,
    }
