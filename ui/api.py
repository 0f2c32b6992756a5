"""The named endpoint `/generate`: the model's inputs by their own names -> audio + run record.

It has hidden components of its own (so that Gradio checks uploaded files and types), no
trigger on the page, and is the only public endpoint of the app. On a shared deployment each
call gets a fresh owner identity (an API caller can never read another visitor's runs) and
spends the allowance of its client address (ui.identity).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import gradio as gr

from services.errors import RequestInvalid, StudioError
from services.input_help import docstring
from services.musicgen import INPUT_NAMES, INPUTS, InputField
from ui.context import Studio
from ui.run_slots import run_slots
from ui.take_audio import TakeAudio

DESCRIPTION = (
    "Generate music with MusicGen. Parameters are the model's own inputs, plus `engine` "
    "(local: this machine, replicate: Replicate; empty: the server's default). With the local "
    "engine `model_version` is a Hugging Face checkpoint id (empty: the configured default). "
    "Returns the audio file and a JSON record of the run (library_id, prediction_id, status, "
    "seed, predict_time, engine, checkpoint, device, realtime_factor, measured bpm and key, "
    "error, ...). Refused "
    "inputs raise an error naming each field; nothing is sent then."
)


# The parameters that are the model's own inputs (the request), in the API's order: the order
# of `GenerationRequest`'s fields.
REQUEST_PARAMETERS: tuple[str, ...] = INPUT_NAMES
# What a caller may pass for each kind of input (Gradio's components hand over these types).
_API_TYPES: dict[str, Any] = {
    "text": str | None,
    "file": str | None,
    "choice": str | None,
    "whole": float | None,
    "number": float | None,
    "switch": bool | None,
}


def _generate_signature() -> inspect.Signature:
    """`generate(self, <the model's inputs>, engine, api_token)`, every one defaulting to None."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("self", kind)]
    params += [
        inspect.Parameter(spec.name, kind, default=None, annotation=_API_TYPES[spec.kind])
        for spec in INPUTS
    ]
    params += [
        inspect.Parameter(name, kind, default=None, annotation=str | None)
        for name in ("engine", "api_token")
    ]
    return inspect.Signature(params, return_annotation=tuple[str | None, dict[str, Any]])


GENERATE_SIGNATURE = _generate_signature()


class GenerateApi:
    """`generate(...)` with exactly the model's input names (plus `api_token` when needed)."""

    def __init__(self, studio: Studio):
        self.studio = studio

    async def generate(self, *args: Any, **kwargs: Any) -> tuple[str | None, dict[str, Any]]:
        """Run one generation to its end; returns (audio file or None, run record)."""
        named = GENERATE_SIGNATURE.bind(self, *args, **kwargs).arguments
        raw = {name: named.get(name) for name in REQUEST_PARAMETERS}
        engine: str | None = named.get("engine")
        api_token: str | None = named.get("api_token")
        service = self.studio.service
        visitor = self.studio.api_visitor()
        owner = visitor.owner
        with api_errors():
            prepared = await asyncio.to_thread(service.prepare, raw, engine)
            last = None
            async for update in service.generate(
                prepared,
                token=self.studio.token(api_token),
                owner=owner,
                engine=engine,
                payer=visitor.payer,  # the caller's address (or account): never one for all
            ):
                last = update
        if last is None or last.run_id is None:
            raise gr.Error("The run ended without a result.")
        record = api_record(service.summary(last.run_id, owner), owner)
        audio = self.studio.files.servable(last.audio_path) if last.audio_path else None
        return audio, record


GENERATE_RETURNS = (
    "The audio file, and the run's record: library_id, prediction_id, status, seed used, "
    "predict_time, engine, checkpoint, device, realtime_factor, the measured bpm and key "
    '("A minor"), error.'
)
GenerateApi.generate.__signature__ = GENERATE_SIGNATURE  # type: ignore[attr-defined]
GenerateApi.generate.__doc__ = docstring(
    "Make one take of music with MusicGen from a description (and optionally a melody to "
    "follow or a clip to continue). Refused inputs raise an error naming each field; nothing "
    "is sent then.",
    [*REQUEST_PARAMETERS, "engine", "api_token"],
    {},
    GENERATE_RETURNS,
)


def refusal(err: RequestInvalid) -> gr.Error:
    """A refused request, for an API caller: every field named, and nothing sent."""
    return gr.Error("Nothing was sent. " + "; ".join(str(e) for e in err.errors))


@contextlib.contextmanager
def api_errors() -> Iterator[None]:
    """A refusal or a failure, as the error an API caller (or MCP client) is shown."""
    try:
        yield
    except RequestInvalid as err:
        raise refusal(err) from None
    except StudioError as err:
        raise gr.Error(str(err)) from None


def request_endpoint(
    fn: Callable[[dict[str, Any]], Awaitable[Any]], extra: dict[str, Any], doc: str
) -> Callable[..., Awaitable[Any]]:
    """An endpoint taking /generate's parameters, then `extra` (name: default), then
    `api_token`; `fn` gets them all by name. Its signature is what gradio_client and the MCP
    tools list, and `doc` describes each parameter."""
    generate = inspect.signature(GenerateApi.generate)
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [p for name, p in generate.parameters.items() if name not in ("self", "api_token")]
    params += [inspect.Parameter(name, kind, default=default) for name, default in extra.items()]
    params.append(generate.parameters["api_token"])
    names = [p.name for p in params]

    async def endpoint(*values: Any) -> Any:
        return await fn(dict(zip(names, values, strict=False)))

    endpoint.__signature__ = generate.replace(parameters=params)  # type: ignore[attr-defined]
    endpoint.__doc__ = doc
    endpoint.__name__ = endpoint.__qualname__ = fn.__name__  # the MCP tool's name
    return endpoint


def api_record(summary: dict[str, Any], owner: str | None) -> dict[str, Any]:
    """A run's record for an API caller; on a shared deployment with the key to its runs.

    Each API call there has an identity of its own: `access_key` lets the same caller work on
    its results again (e.g. `/extend` them), and no one else.
    """
    return {**summary, "access_key": owner} if owner else summary


def _api_component(spec: InputField) -> gr.components.Component:
    """A hidden input named and defaulted as the model's input `spec`."""
    if spec.kind == "file":
        return gr.Audio(label=spec.name, type="filepath", sources=["upload"])
    if spec.kind == "switch":
        return gr.Checkbox(spec.default, label=spec.name)
    if spec.kind in ("whole", "number"):
        return gr.Number(spec.default, label=spec.name)
    if spec.kind == "choice":
        # Text, not dropdowns: a value outside the choices then reaches our validation,
        # which names the field and its allowed values (Gradio's own refusal does not).
        if spec.input.per_engine:  # empty: the engine's own default
            return gr.Textbox("", label=spec.name, info=f"Replicate: {', '.join(spec.choices)}")
        return gr.Textbox(spec.default, label=spec.name, info=", ".join(spec.choices))
    return gr.Textbox(spec.default or "", label=spec.name)


def model_input_components() -> list[gr.components.Component]:
    """Hidden inputs named and defaulted as the model's inputs, then `engine` (in that order)."""
    return [
        *(_api_component(spec) for spec in INPUTS),
        gr.Textbox("", label="engine", info="local, replicate, or empty for the default"),
    ]


def token_components(studio: Studio) -> list[gr.components.Component]:
    """`api_token`, only where callers must bring their own."""
    if studio.service.engines.needs_visitor_token:
        return [gr.Textbox("", type="password", label="api_token")]
    return []


def build_api(studio: Studio) -> None:
    """Hidden inputs and outputs of `/generate`, named and defaulted as the model's inputs."""
    api = GenerateApi(studio)
    with gr.Column(visible=False):
        inputs = [*model_input_components(), *token_components(studio)]
        outputs = [TakeAudio(label="audio", type="filepath"), gr.JSON(label="record")]
    gr.on(
        triggers=[],
        fn=api.generate,
        inputs=inputs,
        outputs=outputs,
        api_name="generate",
        api_description=DESCRIPTION,
        show_progress="hidden",
        **run_slots(studio.settings),  # the page's runs and the API's share the slots
    )
