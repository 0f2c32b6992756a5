"""What meta/musicgen's predict() does with an input: its refusals, its logs, its timing."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from .audio import DecodedAudio
from .config import EmulatorConfig

TOKENS_PER_SECOND_OF_AUDIO = 50  # EnCodec frame rate at 32 kHz

_WORKER_FRAME = (
    "Traceback (most recent call last):\n"
    '  File "/root/.pyenv/versions/3.11.10/lib/python3.11/site-packages/cog/server/worker.py",'
    " line 354, in _predict\n"
    "    result = predict(**payload)\n"
    "             ^^^^^^^^^^^^^^^^^^\n"
)

FFMPEG_BANNER = (
    "ffmpeg version 4.4.2-0ubuntu0.22.04.1 Copyright (c) 2000-2021 the FFmpeg developers\n"
    "  built with gcc 11 (Ubuntu 11.2.0-19ubuntu1)\n"
    "  libavutil      56. 70.100 / 56. 70.100\n"
    "  libavcodec     58.134.100 / 58.134.100\n"
    "  libavformat    58. 76.100 / 58. 76.100\n"
    "Guessed Channel Layout for Input Stream #0.0 : {layout}\n"
    "Input #0, wav, from 'out.wav':\n"
    "  Duration: {clock}, bitrate: {kbps} kb/s\n"
    "  Stream #0:0: Audio: pcm_s16le ([1][0][0][0] / 0x0001), 32000 Hz, {layout}, s16, "
    "{kbps} kb/s\n"
    "Stream mapping:\n"
    "  Stream #0:0 -> #0:0 (pcm_s16le (native) -> mp3 (libmp3lame))\n"
    "Press [q] to stop, [?] for help\n"
    "Output #0, mp3, to 'out.mp3':\n"
    "  Metadata:\n"
    "    TSSE            : Lavf58.76.100\n"
    "  Stream #0:0: Audio: mp3, 32000 Hz, {layout}, fltp\n"
    "size=     {size}kB time={clock} bitrate= 128.0kbits/s speed= 95.1x\n"
    "video:0kB audio:{size}kB subtitle:0kB other streams:0kB global headers:0kB "
    "muxing overhead: 0.1%"
)


def traceback(exc_type: str, message: str, source_line: int, statement: str) -> str:
    """A Python traceback as cog writes it to the logs when predict() raises."""
    return (
        _WORKER_FRAME
        + f'  File "/src/predict.py", line {source_line}, in predict\n'
        + f"    {statement}\n"
        + f"{exc_type}: {message}"
    )


@dataclass
class RunPlan:
    """The processing phase of one run, decided when the run is created.

    `lines` are (seconds after processing started, text, terminator) in order.
    """

    seconds: float
    lines: list[tuple[float, str, str]] = field(default_factory=list)
    error: str | None = None
    seed: int | None = None
    tokens: int = 0
    output_seconds: float = 0.0
    channels: int = 2
    output_format: str = "wav"
    prompt_slice: tuple[float, float] | None = None  # continuation: seconds of input_audio


def _clock(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours:02d}:{minutes:02d}:{secs:05.2f}"


def ffmpeg_banner(seconds: float, channels: int) -> str:
    layout = "stereo" if channels == 2 else "mono"
    kbps = 32000 * 16 * channels // 1000
    size = max(1, int(seconds * 16))
    return FFMPEG_BANNER.format(layout=layout, clock=_clock(seconds), kbps=kbps, size=size)


def _fail(plan: RunPlan, at: float, text: str, error: str) -> RunPlan:
    plan.lines.append((at, text, "\n"))
    plan.error = error
    plan.seconds = at
    return plan


def plan_run(
    inputs: dict[str, Any],
    *,
    config: EmulatorConfig,
    cold: bool,
    mbd_cold: bool,
    audio: DecodedAudio | None,
    audio_error: str | None,
    rng: random.Random,
) -> RunPlan:
    """Follow predict()'s checks in its order and lay out the logs over the run's time."""
    model_version = inputs["model_version"]
    channels = 2 if "stereo" in model_version else 1
    plan = RunPlan(seconds=0.0, channels=channels, output_format=inputs["output_format"])
    fail_at = config.fail_seconds
    has_audio = bool(inputs.get("input_audio"))
    continuation = bool(inputs["continuation"])

    early: tuple[str, int, str] | None = None
    if inputs.get("prompt") is None and not has_audio:
        early = ("Must provide either prompt or input_audio", 146, "raise ValueError(")
    elif continuation and not has_audio:
        early = ("Must provide `input_audio` if continuation is `True`.", 148, "raise ValueError(")
    elif model_version in ("stereo-large", "large") and has_audio and not continuation:
        early = (
            "`stereo-large` and `large` model does not support melody input. Set "
            "`model_version='stereo-melody-large'` or `model_version='melody-large'` to "
            "condition on audio input.",
            155,
            "raise ValueError(",
        )
    elif "stereo" in model_version and inputs["multi_band_diffusion"]:
        early = (
            "Multi-Band Diffusion is only available with non-stereo models.",
            160,
            "raise ValueError(",
        )
    if early is not None:
        message, line, statement = early
        return _fail(plan, fail_at, traceback("ValueError", message, line, statement), message)

    if inputs["multi_band_diffusion"] and mbd_cold:
        plan.lines.append((0.0, "Loading MultiBandDiffusion...", "\n"))
        plan.lines.append((0.0, "MultiBandDiffusion loaded successfully.", "\n"))
    if cold:
        plan.lines.append((0.0, f"Loading model {model_version}...", "\n"))
        plan.lines.append((0.0, f"Model {model_version} loaded successfully.", "\n"))

    seed = inputs.get("seed")
    if not seed or seed == -1:
        seed = rng.randint(0, 2**32 - 2)
    plan.seed = int(seed)
    plan.lines.append((0.0, f"Using seed {plan.seed}", "\n"))

    duration = int(inputs["duration"])
    total_tokens = duration * TOKENS_PER_SECOND_OF_AUDIO
    prompt_tokens = 0
    if has_audio:
        if audio is None:
            message = f"Failed to load audio from input_audio: {audio_error or 'unknown error'}"
            return _fail(
                plan,
                fail_at,
                traceback(
                    "RuntimeError", message, 194, "input_audio, sr = torchaudio.load(input_audio)"
                ),
                message,
            )
        clip = audio.duration
        start = inputs.get("continuation_start") or 0
        end = inputs.get("continuation_end")
        end = clip if end is None or end == -1 else end
        if start > end:
            message = "`continuation_start` must be less than or equal to `continuation_end`"
            return _fail(
                plan, fail_at, traceback("ValueError", message, 202, "raise ValueError("), message
            )
        slice_start, slice_end = min(start, clip), min(end, clip)
        if continuation:
            plan.prompt_slice = (slice_start, slice_end)
            prompt_tokens = round((slice_end - slice_start) * TOKENS_PER_SECOND_OF_AUDIO)
            if prompt_tokens > total_tokens:
                message = "Prompt is longer than audio to generate"
                return _fail(
                    plan,
                    fail_at,
                    traceback(
                        "AssertionError", message, 213, "wav, tokens = model.generate_continuation("
                    ),
                    message,
                )
    if duration < 1:
        message = "duration must be a positive number of seconds"
        return _fail(
            plan,
            fail_at,
            traceback("ValueError", message, 224, "set_generation_params(duration)"),
            message,
        )

    to_generate = total_tokens - prompt_tokens
    plan.tokens = to_generate
    if config.run_seconds is not None:
        seconds = float(config.run_seconds)
    else:
        seconds = to_generate / max(config.tokens_per_second, 1e-9)
    if seconds > config.timeout_seconds:
        return _fail(plan, config.timeout_seconds, "Prediction timed out", "Prediction timed out")
    plan.seconds = seconds
    plan.output_seconds = float(duration)

    step = config.progress_every_tokens or max(1, to_generate // 20)
    done = step
    while to_generate > 0:
        done = min(done, to_generate)
        at = seconds * done / to_generate
        plan.lines.append((at, f"{done: 6d} / {to_generate: 6d}", config.progress_separator))
        if done == to_generate:
            break
        done += step
    if plan.output_format == "mp3":
        plan.lines.append((seconds, ffmpeg_banner(duration, channels), "\n"))
    return plan
