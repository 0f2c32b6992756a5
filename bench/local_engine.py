"""The local engine against plain `transformers`, on musicgen-small's architecture.

    python -m bench.local_engine                  # 2 s takes, 2 repetitions, every table row
    python -m bench.local_engine --reps 1 --skip-memory

Builds a random-weight checkpoint with musicgen-small's dimensions (decoder 24 layers, hidden
1024, 16 heads, 4 codebooks of 2048; T5-base; the 32 kHz EnCodec) in a temporary folder, and
prints one table, each measure beside its target (issue 16):

- one take: "plain generate" is transformers' own fp32 `generate` on the same checkpoint with
  the same prompt, sampling settings and number of steps; "ours" is the same request through
  LocalEngine at its default precision (queue, worker thread, per-step progress, normalization,
  wav file; previews off, as /generate). Both in one process, alternating take by take, so a
  shared machine's drifting load hits both alike.
- peak RSS per precision: each in a process of its own (load as the engine does, then 20
  guided decoding steps).
- quality guard: int8 against fp32 on the same inputs, teacher-forced over 200 decoding steps
  (random codes): top-1 agreement of the next-token distributions and their mean KL.

`rows(folder, seconds, reps)` returns this module's rows; modules listed in EXTRA_ROWS
(bench.local_batching) contribute theirs through `rows(seconds, checkpoint)`, as dicts with a
measure, a value, a target, a PASS/MISS result and a note.
Random weights make noise, but every step costs what it costs with the real weights.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROMPT = "lofi beat with mellow piano"
SEED = 1234
QUALITY_STEPS = 200
MEMORY_STEPS = 20
PRECISIONS = ("fp32", "int8", "bf16", "fp16")
# Modules with a `rows(seconds: float, checkpoint: str) -> list[dict[str, Any]]` of their own.
EXTRA_ROWS = ("bench.local_batching",)


@dataclass(frozen=True)
class Row:
    """One line of the table: what is measured, the figure, and its target."""

    measure: str
    result: str
    target: str = ""


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def _rss_mb() -> dict[str, float]:
    """Resident memory now (Linux), split into anonymous memory (what the process really holds)
    and file pages (the safetensors file stays memory-mapped: page cache the kernel can drop)."""
    fields = ("VmRSS", "RssAnon", "RssFile")
    out: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name = line.split(":")[0]
        if name in fields:
            out[name] = int(line.split()[1]) / 1024
    return out


def _request(seconds: int) -> Any:
    from services.musicgen import GenerationRequest

    return GenerationRequest(
        prompt=PROMPT, duration=seconds, model_version="", seed=SEED, output_format="wav"
    )


def _engine(folder: str, precision: str) -> Any:
    from services.engines.local import LocalConfig, LocalEngine

    return LocalEngine(
        LocalConfig(default_model=folder, device="cpu", preview_seconds=0, precision=precision)
    )


async def _engine_take(engine: Any, seconds: int, workdir: Path) -> float:
    """One take through the engine, as the service drives it; its predict time."""
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    run = await engine.start(_request(seconds), workdir=workdir)
    final = None
    async for update in engine.follow(run, started=started, workdir=workdir):
        final = update
    assert final is not None and final.status == "succeeded", final
    return float(final.predict_time)


def single_take(folder: str, seconds: int, reps: int) -> dict[str, list[float]]:
    """Plain fp32 `generate` and the engine (default precision), alternating take by take."""
    import torch
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration

    from services.engines.local.synth import sampling_kwargs

    plain = MusicgenForConditionalGeneration.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    kwargs = sampling_kwargs(_request(seconds))
    steps = round(seconds * plain.config.audio_encoder.frame_rate)
    steps += plain.config.decoder.num_codebooks - 1
    engine = _engine(folder, "auto")
    engine.preload()

    def direct(n: int) -> float:
        inputs = tokenizer([PROMPT], padding=True, return_tensors="pt")
        torch.manual_seed(SEED)
        started = time.perf_counter()
        with torch.inference_mode():
            plain.generate(**inputs, **kwargs, max_new_tokens=n)
        return time.perf_counter() - started

    times: dict[str, list[float]] = {"plain": [], "ours": []}

    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            direct(8)  # warm-up, both paths
            await _engine_take(engine, 1, Path(tmp) / "warm")
            for rep in range(reps):
                order = ("plain", "ours") if rep % 2 == 0 else ("ours", "plain")
                for name in order:
                    if name == "plain":
                        times[name].append(direct(steps))
                    else:
                        workdir = Path(tmp) / f"take{rep}"
                        times[name].append(await _engine_take(engine, seconds, workdir))
                    print(f"  {name}: {times[name][-1]:.1f} s", file=sys.stderr)

    try:
        asyncio.run(main())
    finally:
        engine.shutdown()
    return times


def memory(folder: str, precision: str) -> dict[str, float]:
    """Peak RSS of a process that loads the checkpoint at `precision` as the engine does and
    runs MEMORY_STEPS guided decoding steps (weights, KV cache and activations)."""
    import torch

    from services.engines.local.checkpoints import Device
    from services.engines.local.loader import load
    from services.engines.local.synth import sampling_kwargs

    quiet: Callable[[str], None] = lambda line: None  # noqa: E731
    loaded = load(folder, Device("cpu", precision), quiet)  # type: ignore[arg-type]
    inputs = loaded.tokenizer([PROMPT], return_tensors="pt")
    torch.manual_seed(SEED)
    with torch.inference_mode():
        loaded.model.generate(**inputs, **sampling_kwargs(_request(1)), max_new_tokens=MEMORY_STEPS)
    return {"peak_rss_mb": _peak_rss_mb(), **_rss_mb()}


def quality(folder: str) -> dict[str, float]:
    """int8 against fp32: next-token distributions over the same 200 steps of codes."""
    import torch

    from services.engines.local.checkpoints import Device
    from services.engines.local.loader import load

    quiet: Callable[[str], None] = lambda line: None  # noqa: E731
    fp32 = load(folder, Device("cpu", "fp32"), quiet)
    int8 = load(folder, Device("cpu", "int8"), quiet)
    vocab = int(fp32.model.config.decoder.vocab_size)
    generator = torch.Generator().manual_seed(SEED)
    codes = torch.randint(0, vocab, (fp32.num_codebooks, QUALITY_STEPS), generator=generator)
    text = fp32.tokenizer([PROMPT], return_tensors="pt")
    with torch.inference_mode():
        p = fp32.model(**text, decoder_input_ids=codes).logits.float().log_softmax(-1)
        q = int8.model(**text, decoder_input_ids=codes).logits.float().log_softmax(-1)
    agree = (p.argmax(-1) == q.argmax(-1)).float().mean().item()
    kl = (p.exp() * (p - q)).sum(-1).mean().item()
    return {"top1_agreement": agree, "mean_kl": kl}


def rows(folder: Path, seconds: int = 2, reps: int = 2, *, skip_memory: bool = False) -> list[Row]:
    """Every row of this module's part of the table (each measure in its own process)."""
    out: list[Row] = []
    times = _spawn("take", folder, seconds=seconds, reps=reps)
    plain, ours = statistics.median(times["plain"]), statistics.median(times["ours"])
    out.append(
        Row(
            f"one {seconds} s take: plain generate (fp32) / ours (auto: int8)",
            f"{plain:.1f} s / {ours:.1f} s = **{plain / ours:.2f}x** faster "
            f"(median of {reps}; each: {_list(times['plain'])} / {_list(times['ours'])})",
            ">= 1.6x faster (aim 2.5x)",
        )
    )
    if not skip_memory:
        out += memory_rows(folder)
    guard = _spawn("quality", folder)
    out.append(
        Row(
            f"quality guard, int8 vs fp32, {QUALITY_STEPS} steps: top-1 agreement / mean KL",
            f"{guard['top1_agreement']:.1%} / {guard['mean_kl']:.4f} nats",
            "reported",
        )
    )
    return out


def memory_rows(folder: Path) -> list[Row]:
    """Peak RSS per precision (the load's transient included), and what stays resident."""
    out = []
    for precision in PRECISIONS:
        rss = _spawn("memory", folder, precision=precision)
        label = f"peak RSS, {precision} (load + {MEMORY_STEPS} steps)"
        kept = f"after the steps: {rss['RssAnon']:,.0f} MB anonymous"
        kept += f" + {rss['RssFile']:,.0f} MB of the mapped safetensors file"
        out.append(Row(label, f"{rss['peak_rss_mb']:,.0f} MB ({kept})", "reported"))
    return out


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def _extra_rows(folder: Path, seconds: int) -> list[Row]:
    """Rows from the other benchmark modules that exist in this checkout."""
    found: list[Row] = []
    for name in EXTRA_ROWS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        for row in module.rows(float(seconds), str(folder)):
            note = f" ({row['note']})" if row.get("note") else ""
            found.append(Row(row["measure"], f"{row['value']}{note}", _verdict(row)))
    return found


def _verdict(row: dict[str, Any]) -> str:
    """The target with its PASS/MISS, as the batching bench states them."""
    return f"{row['target']}: {row['result']}" if row.get("result") else str(row["target"])


def _spawn(side: str, folder: Path, **options: Any) -> dict[str, Any]:
    """Run one measure in a fresh process (its own peak memory, no state from the others)."""
    cmd = [sys.executable, "-m", "bench.local_engine", "--side", side, "--checkpoint", str(folder)]
    cmd += ["--options", json.dumps(options)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ))
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _child(side: str, folder: str, options: dict[str, Any]) -> None:
    if side == "take":
        result: Any = single_take(folder, options["seconds"], options["reps"])
    elif side == "memory":
        result = memory(folder, options["precision"])
    else:
        result = quality(folder)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--checkpoint", help="use this folder instead of building one")
    parser.add_argument("--skip-memory", action="store_true", help="no peak-RSS rows")
    parser.add_argument("--side", choices=["take", "memory", "quality"], help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        _child(args.side, args.checkpoint, json.loads(args.options))
        return
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.checkpoint) if args.checkpoint else Path(tmp) / "musicgen-small-random"
        if not args.checkpoint:
            print("Building a random-weight musicgen-small checkpoint...", file=sys.stderr)
            from tests.support.tiny_musicgen import build_checkpoint

            build_checkpoint(folder, "text", size="small")
        table = rows(folder, args.seconds, args.reps, skip_memory=args.skip_memory)
        table += _extra_rows(folder, args.seconds)
    load_after = os.getloadavg()
    what = args.checkpoint or "musicgen-small's architecture, random weights"
    print(f"\n{what}, CPU ({os.cpu_count()} cores); load")
    print(f"average {load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end\n")
    print("| measure | result | target |")
    print("|---|---|---|")
    for row in table:
        print(f"| {row.measure} | {row.result} | {row.target} |")


if __name__ == "__main__":
    main()
