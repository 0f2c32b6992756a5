"""The local engine against transformers' own `generate`, on musicgen-small's architecture.

    python -m bench.local_engine                 # 5 s takes, 3 repetitions each
    python -m bench.local_engine --seconds 2 --reps 1
    python -m bench.local_engine --memory        # plus each path's peak memory, alone

Builds a random-weight checkpoint with musicgen-small's dimensions (decoder 24 layers, hidden
1024, 16 heads, 4 codebooks of 2048; T5-base; the 32 kHz EnCodec) in a temporary folder.
"transformers generate" calls `generate` on the loaded model with the same prompt, sampling
settings and number of tokens the engine uses; the LocalEngine rows run the same request through
the engine (queue, worker thread, per-step progress, streamed previews, normalization, wav
file). All three share one process and one warm model and alternate take by take (a busy
machine's load drifts over minutes). `--memory` adds each path's peak RSS, each in a process of
its own. Random weights make noise, but every step costs what it costs with the real weights.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPT = "lofi beat with mellow piano"
SEED = 1234


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def _request(seconds: int) -> Any:
    from services.musicgen import GenerationRequest

    return GenerationRequest(
        prompt=PROMPT, duration=seconds, model_version="", seed=SEED, output_format="wav"
    )


def run_direct(folder: str, seconds: int, reps: int) -> dict[str, Any]:
    """transformers alone: tokenize, generate the same number of steps, nothing else."""
    import torch
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration

    from services.engines.local.synth import sampling_kwargs

    model = MusicgenForConditionalGeneration.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    kwargs = sampling_kwargs(_request(seconds))
    codebooks = model.config.decoder.num_codebooks
    frame_rate = model.config.audio_encoder.frame_rate

    def take(secs: float) -> float:
        inputs = tokenizer([PROMPT], padding=True, return_tensors="pt")
        torch.manual_seed(SEED)
        started = time.perf_counter()
        model.generate(**inputs, **kwargs, max_new_tokens=round(secs * frame_rate) + codebooks - 1)
        return time.perf_counter() - started

    take(0.5)  # warm-up
    times = [take(seconds) for _ in range(reps)]
    return {"times": times, "peak_rss_mb": _peak_rss_mb()}


def run_engine(folder: str, seconds: int, reps: int, preview_seconds: float) -> dict[str, Any]:
    """The same take through LocalEngine, as the generation service drives it."""
    from services.engines.local import LocalConfig, LocalEngine

    engine = LocalEngine(
        LocalConfig(default_model=folder, device="cpu", preview_seconds=preview_seconds)
    )
    engine.preload()

    async def take(secs: int, workdir: Path) -> tuple[float, float, float]:
        started = time.monotonic()
        run = await engine.start(_request(secs), workdir=workdir)
        first_preview = float("nan")
        final = None
        async for update in engine.follow(run, started=started, workdir=workdir):
            if update.preview_path and first_preview != first_preview:
                first_preview = time.monotonic() - started
            final = update
        assert final is not None and final.status == "succeeded", final
        assert final.predict_time is not None
        return final.predict_time, time.monotonic() - started, first_preview

    async def main() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            await take(1, Path(tmp))  # warm-up
            results = [await take(seconds, Path(tmp)) for _ in range(reps)]
        return {
            "times": [r[0] for r in results],
            "walls": [r[1] for r in results],
            "first_preview": [r[2] for r in results],
        }

    try:
        out = asyncio.run(main())
    finally:
        engine.shutdown()
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def run_interleaved(folder: str, seconds: int, reps: int) -> dict[str, Any]:
    """All three paths in one process on one loaded model, alternating take by take.

    A shared machine's load drifts over minutes; alternating puts every path under the same
    drift, so their ratio holds even when the absolute times don't.
    """
    import dataclasses

    import torch

    from services.engines.local import LocalConfig, LocalEngine
    from services.engines.local.synth import sampling_kwargs

    engine = LocalEngine(LocalConfig(default_model=folder, device="cpu"))
    loaded = engine.preload()
    kwargs = sampling_kwargs(_request(seconds))
    steps = round(seconds * loaded.frame_rate) + loaded.channel_codebooks - 1

    def direct() -> tuple[float, float, float]:
        inputs = loaded.tokenizer([PROMPT], padding=True, return_tensors="pt")
        torch.manual_seed(SEED)
        started = time.perf_counter()
        loaded.model.generate(**inputs, **kwargs, max_new_tokens=steps)
        spent = time.perf_counter() - started
        return spent, spent, float("nan")

    async def through_engine(preview: float, workdir: Path) -> tuple[float, float, float]:
        engine.config = dataclasses.replace(engine.config, preview_seconds=preview)
        started = time.monotonic()
        run = await engine.start(_request(seconds), workdir=workdir)
        first_preview = float("nan")
        final = None
        async for update in engine.follow(run, started=started, workdir=workdir):
            if update.preview_path and first_preview != first_preview:
                first_preview = time.monotonic() - started
            final = update
        assert final is not None and final.status == "succeeded", final
        assert final.predict_time is not None
        return final.predict_time, time.monotonic() - started, first_preview

    names = (
        "transformers generate",
        "LocalEngine, previews every 1 s",
        "LocalEngine, previews off",
    )
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}

    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            direct()  # warm-up, both paths
            await through_engine(1.0, Path(tmp))
            for rep in range(reps):
                order = names if rep % 2 == 0 else tuple(reversed(names))
                for name in order:
                    if name == names[0]:
                        results[name].append(direct())
                    else:
                        preview = 1.0 if name == names[1] else 0.0
                        results[name].append(await through_engine(preview, Path(tmp)))
                    print(f"  {name}: {results[name][-1][0]:.1f} s", file=sys.stderr)

    try:
        asyncio.run(main())
    finally:
        engine.shutdown()
    return {
        name: {
            "times": [r[0] for r in rows],
            "walls": [r[1] for r in rows] if name != names[0] else None,
            "first_preview": [r[2] for r in rows] if name == names[1] else None,
        }
        for name, rows in results.items()
    }


def _child(args: argparse.Namespace) -> None:
    if args.side == "interleaved":
        result = run_interleaved(args.checkpoint, args.seconds, args.reps)
    elif args.side == "direct":
        result = run_direct(args.checkpoint, args.seconds, args.reps)
    else:
        result = run_engine(args.checkpoint, args.seconds, args.reps, args.preview)
    print(json.dumps(result))


def _spawn(side: str, folder: Path, seconds: int, reps: int, preview: float) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "bench.local_engine", "--side", side, "--checkpoint", str(folder),
        "--seconds", str(seconds), "--reps", str(reps), "--preview", str(preview),
    ]  # fmt: skip
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--checkpoint", help="use this folder instead of building one")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="also run each path in a process of its own, for its peak memory (slower)",
    )
    parser.add_argument(
        "--side", choices=["direct", "engine", "interleaved"], help=argparse.SUPPRESS
    )
    parser.add_argument("--preview", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        _child(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.checkpoint) if args.checkpoint else Path(tmp) / "musicgen-small-random"
        if not args.checkpoint:
            print("Building a random-weight musicgen-small checkpoint...", file=sys.stderr)
            from tests.support.tiny_musicgen import build_checkpoint

            build_checkpoint(folder, "text", size="small")
        print("Running the three paths, alternating...", file=sys.stderr)
        rows = _spawn("interleaved", folder, args.seconds, args.reps, 0.0)
        if args.memory:
            for name, side, preview in (
                ("transformers generate", "direct", 0.0),
                ("LocalEngine, previews every 1 s", "engine", 1.0),
                ("LocalEngine, previews off", "engine", 0.0),
            ):
                print(f"Peak memory of {name}...", file=sys.stderr)
                alone = _spawn(side, folder, 1, 1, preview)
                rows[name]["peak_rss_mb"] = alone["peak_rss_mb"]
    _print_table(rows, args.seconds, args.reps)


def _print_table(rows: dict[str, dict[str, Any]], seconds: int, reps: int) -> None:
    base = statistics.median(rows["transformers generate"]["times"])
    print(f"\n{seconds} s takes, median of {reps}, warm model, CPU\n")
    print(
        "| path | RTF (s per s of audio) | vs generate | click to file (RTF) | first preview "
        "| peak RSS |"
    )
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        t = statistics.median(row["times"])
        first = row.get("first_preview")
        shown = (
            f"{statistics.median(first):.2f} s" if first and all(f == f for f in first) else "n/a"
        )
        walls = row.get("walls")
        wall = f"{statistics.median(walls) / seconds:.2f}" if walls else "n/a"
        rss = row.get("peak_rss_mb")
        memory = f"{rss:,.0f} MB" if rss else "n/a (--memory)"
        print(f"| {name} | {t / seconds:.2f} | {t / base:.3f} | {wall} | {shown} | {memory} |")
    print("\nraw:", json.dumps(rows))


if __name__ == "__main__":
    main()
