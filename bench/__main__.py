"""Run the benchmarks of issue #5 and print one markdown table.

    python -m bench                       # everything (~10 minutes on 2 cores)
    python -m bench --quick               # fewer, shorter runs: a smoke test of the harness
    python -m bench --only latency,page   # some parts: latency, concurrency, library,
                                          #   coldstart, page

Raw results are saved as JSON under bench/results/ (gitignored). The Replicate emulator runs in
a process of its own (bench.emulator), so its CPU is never charged to the client measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import latency
from bench.emulator import EmulatorProcess
from bench.stats import markdown_table, ms, secs, verdict

PARTS = ("latency", "concurrency", "library", "coldstart", "page")
RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Targets of issue #5.
ADDED_P50_MAX = 0.050
ADDED_RATIO_MAX = 0.1
REQUESTS_RATIO_MAX = 1 / 3
PROGRESS_GAP_MAX = 2.0
CONCURRENCY_RATIO_MAX = 1.1
LIBRARY_P50_MAX = 0.100
COLD_START_MAX = 1.0


@dataclass(frozen=True)
class Plan:
    runs: int
    durations: list[float]
    official_streams: list[bool]
    concurrency: list[int]
    concurrency_seconds: float
    library_runs: int
    library_queries: int
    cold_repeats: int
    page_seconds: list[float]
    page_repeats: int


def make_plan(args: argparse.Namespace) -> Plan:
    if args.quick:
        return Plan(
            runs=args.runs or 5,
            durations=[2.0, 10.0],
            official_streams=[True],
            concurrency=[1, 10, 100],
            concurrency_seconds=2.0,
            library_runs=2000,
            library_queries=100,
            cold_repeats=2,
            page_seconds=[2.0],
            page_repeats=2,
        )
    return Plan(
        runs=args.runs or 20,
        durations=[2.0, 10.0, 30.0],
        official_streams=[True, False] if args.official_both else [True],
        concurrency=[1, 10, 100],
        concurrency_seconds=5.0,
        library_runs=10_000,
        library_queries=200,
        cold_repeats=5,
        page_seconds=[2.0, 10.0],
        page_repeats=5,
    )


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- parts ---------------------------------------------------------------------------------


def part_latency(emulator: EmulatorProcess, plan: Plan, variant: str) -> dict[str, Any]:
    """Every client x stream setting x duration; our client always with the stream on and off."""
    out: dict[str, Any] = {"batches": [], "samples": []}
    seed = 1000
    modes = [(latency.OURS, s) for s in (True, False)]
    modes += [
        (c, s) for c in (latency.OFFICIAL_WAIT, latency.OFFICIAL_RUN) for s in plan.official_streams
    ]
    for client, stream in modes:
        # Warm-up (imports, thread pool, the emulator's rendered file): not counted.
        latency.run_batch(emulator, client, stream, 0.5, 1, latency.AUDIO_SECONDS, seed, variant)
        seed += 1
        for seconds in plan.durations:
            on = "on" if stream else "off"
            log(f"latency: {client}, stream {on}, {seconds:g} s x {plan.runs}")
            samples = latency.run_batch(
                emulator, client, stream, seconds, plan.runs, latency.AUDIO_SECONDS, seed, variant
            )
            seed += plan.runs
            summary = latency.summarise(samples)
            out["batches"].append(
                {"client": client, "stream": stream, "run_seconds": seconds, **summary}
            )
            out["samples"] += latency.as_json(samples)
    return out


def part_concurrency(emulator: EmulatorProcess, plan: Plan, variant: str) -> dict[str, Any]:
    from bench.concurrency import run_concurrency, run_floor

    log(f"concurrency: {plan.concurrency} runs of {plan.concurrency_seconds:g} s, stream on/off")
    batches = run_concurrency(
        emulator, plan.concurrency, plan.concurrency_seconds, [True, False], variant
    )
    out: dict[str, Any] = {"batches": [b.summary() for b in batches], "floor": []}
    log("concurrency: the floor (an oracle client that knows when each run ends)")
    try:
        floor = run_floor(emulator, [1, max(plan.concurrency)], plan.concurrency_seconds)
        out["floor"] = [b.summary() for b in floor]
    except Exception:  # the floor only explains; our numbers stand without it
        out["floor_error"] = traceback.format_exc()
        log(f"the floor failed:\n{out['floor_error']}")
    return out


def part_library(plan: Plan) -> dict[str, Any]:
    from bench import library_bench
    from bench.stats import p50, p95
    from services.library import Library

    log(f"library: building {plan.library_runs} runs")
    rng = random.Random(1234)
    with (
        tempfile.TemporaryDirectory(prefix="bench-library-") as scratch,
        Library(Path(scratch)) as lib,
    ):
        build_seconds = library_bench.build(lib, plan.library_runs, rng)
        samples = library_bench.bench(lib, plan.library_queries, rng)
    everything = [t for times in samples.values() for t in times]  # milliseconds
    return {
        "runs": plan.library_runs,
        "build_seconds": build_seconds,
        "page_p50": p50(everything) / 1000,
        "page_p95": p95(everything) / 1000,
        "by_kind": {k: {"p50_ms": p50(v), "p95_ms": p95(v)} for k, v in samples.items()},
    }


def part_coldstart(emulator: EmulatorProcess, plan: Plan) -> dict[str, Any]:
    from bench.coldstart import run_coldstart

    log(f"cold start: python app.py vs import gradio, {plan.cold_repeats} times each")
    return run_coldstart(emulator, plan.cold_repeats).summary()


def part_page(emulator: EmulatorProcess, plan: Plan, variant: str) -> dict[str, Any]:
    from bench.page import run_page

    log(f"through the page: /generate vs floor app, {plan.page_seconds} s x {plan.page_repeats}")
    runs = run_page(emulator, plan.page_seconds, plan.page_repeats, variant)
    return {"runs": [r.summary() for r in runs]}


# ---- the table -----------------------------------------------------------------------------


def _batch(results: dict[str, Any], client: str, stream: bool, seconds: float) -> dict | None:
    for b in results.get("latency", {}).get("batches", []):
        if b["client"] == client and b["stream"] == stream and b["run_seconds"] == seconds:
            return b
    return None


def _pair(b: dict | None) -> str:
    if b is None:
        return "n/a"
    text = f"{ms(b['added_p50'])} / {ms(b['added_p95'])}"
    return text + (f" ({b['failed']} failed)" if b["failed"] else "")


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def _official(results: dict[str, Any], client: str, stream: bool, seconds: float) -> dict | None:
    """The official client's batch with this stream setting, else the one it has (it never
    reads urls.stream, so the setting does not change what it does)."""
    return _batch(results, client, stream, seconds) or _batch(results, client, True, seconds)


def _compared(results: dict[str, Any], plan: Plan) -> Iterator[tuple[bool, float, dict, Any, Any]]:
    """(stream, seconds, ours, official wait, official run) for every batch we measured."""
    for stream in (True, False):
        for seconds in plan.durations:
            ours = _batch(results, latency.OURS, stream, seconds)
            if ours is not None:
                wait = _official(results, latency.OFFICIAL_WAIT, stream, seconds)
                run = _official(results, latency.OFFICIAL_RUN, stream, seconds)
                yield stream, seconds, ours, wait, run


def latency_rows(results: dict[str, Any], plan: Plan) -> list[list[str]]:
    rows = []
    for stream, seconds, ours, wait, run in _compared(results, plan):
        r_wait = _ratio(ours["added_p50"], wait and wait["added_p50"])
        r_run = _ratio(ours["added_p50"], run and run["added_p50"])
        ok = ours["added_p50"] <= ADDED_P50_MAX and all(
            r is not None and r <= ADDED_RATIO_MAX for r in (r_wait, r_run)
        )
        ratios = " / ".join("n/a" if r is None else f"{r:.2f}" for r in (r_wait, r_run))
        rows.append(
            [
                f"added latency p50 / p95, {seconds:g} s run, SSE {'on' if stream else 'off'}",
                _pair(ours),
                _pair(wait),
                _pair(run),
                ratios,
                "≤ 50 ms p50 and ≤ 0.10 × official",
                verdict(ok),
            ]
        )
    return rows


def _kinds(b: dict | None) -> str:
    if b is None:
        return "n/a"
    parts = ", ".join(f"{k} {v:.3g}" for k, v in b["request_kinds_mean"].items())
    return f"{b['requests_mean']:.3g} ({parts})"


def request_rows(results: dict[str, Any], plan: Plan) -> list[list[str]]:
    rows = []
    for stream, seconds, ours, wait, run in _compared(results, plan):
        r_wait = _ratio(ours["requests_mean"], wait and wait["requests_mean"])
        r_run = _ratio(ours["requests_mean"], run and run["requests_mean"])
        gap = ours["progress_gap_max"]
        poll_gap = ours.get("poll_gap_max")  # polling only: the longest wait between polls
        judged = seconds == max(plan.durations)
        ok = (
            r_wait is not None
            and r_wait <= REQUESTS_RATIO_MAX
            and gap is not None
            and gap <= PROGRESS_GAP_MAX
            and (stream or (poll_gap is not None and poll_gap <= PROGRESS_GAP_MAX))
            and (not stream or ours["request_kinds_mean"].get("stream", 0) <= 1)
        )
        polls = "" if stream else f", longest between polls {secs(poll_gap)}"
        rows.append(
            [
                f"HTTP requests per run, {seconds:g} s run, SSE {'on' if stream else 'off'}"
                f"; our progress at most {secs(gap)} stale{polls}",
                _kinds(ours),
                _kinds(wait),
                _kinds(run),
                " / ".join("n/a" if r is None else f"{r:.2f}" for r in (r_wait, r_run)),
                "30 s run: ≤ 1/3 of official, progress ≤ 2 s stale (polls ≤ 2 s apart), "
                "one stream request"
                if judged
                else "(informative)",
                verdict(ok) if judged else "",
            ]
        )
    return rows


def concurrency_rows(results: dict[str, Any]) -> list[list[str]]:
    batches = results.get("concurrency", {}).get("batches", [])
    rows = []
    for stream in (True, False):
        mine = [b for b in batches if b["stream"] == stream]
        one = next((b for b in mine if b["runs"] == 1), None)
        for b in mine:
            ratio = _ratio(b["wall"], one and one["wall"])
            judged = b["runs"] == max(x["runs"] for x in mine)
            failed = f", {b['failed']} failed" if b["failed"] else ""
            rows.append(
                [
                    f"{b['runs']} simultaneous {b['run_seconds']:g} s runs, SSE "
                    f"{'on' if stream else 'off'}: wall / one run's wall",
                    f"{'n/a' if ratio is None else f'{ratio:.2f}'} ({secs(b['wall'])}); CPU/run "
                    f"{ms(b['cpu_self_per_run'])} py + {ms(b['cpu_children_per_run'])} ffmpeg; "
                    f"added p50 {ms(b['added_p50'])}, loop lag max {ms(b['loop_lag_max'])}"
                    f"{failed}",
                    "",
                    "",
                    "",
                    "100 runs ≤ 1.1 × one run" if judged else "(informative)",
                    verdict(
                        ratio is not None and ratio <= CONCURRENCY_RATIO_MAX and not b["failed"]
                    )
                    if judged
                    else "",
                ]
            )
    return rows


def floor_rows(results: dict[str, Any]) -> list[list[str]]:
    floor = results.get("concurrency", {}).get("floor", [])
    one = next((b for b in floor if b["runs"] == 1), None)
    rows = []
    for b in floor:
        if b["runs"] == 1:
            continue
        ratio = _ratio(b["wall"], one and one["wall"])
        rows.append(
            [
                f"(floor) {b['runs']} simultaneous {b['run_seconds']:g} s runs by an oracle client "
                "(no checks, no library, knows when each run ends)",
                f"{'n/a' if ratio is None else f'{ratio:.2f}'} ({secs(b['wall'])}); "
                f"added p50 {ms(b['added_p50'])}",
                "",
                "",
                "",
                "what this emulator + machine allow",
                "",
            ]
        )
    return rows


def other_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    lib = results.get("library")
    if lib:
        rows.append(
            [
                f"library page, {lib['runs']:,} runs: p50 / p95",
                f"{lib['page_p50'] * 1000:.1f} ms / {lib['page_p95'] * 1000:.1f} ms",
                "",
                "",
                "",
                "≤ 100 ms p50",
                verdict(lib["page_p50"] <= LIBRARY_P50_MAX),
            ]
        )
    cold = results.get("coldstart")
    if cold:
        ok = None if cold["errors"] else cold["beyond_import"] <= COLD_START_MAX
        rows.append(
            [
                "cold start: `python app.py` to first 200 (median) vs `import gradio`",
                f"{secs(cold['app_p50'])} vs {secs(cold['import_gradio_p50'])}: "
                f"{cold['beyond_import']:+.2f} s"
                + (f" ({cold['errors'][0][:80]})" if cold["errors"] else ""),
                "",
                "",
                "",
                "≤ 1 s beyond `import gradio`",
                verdict(ok),
            ]
        )
    for page in results.get("page", {}).get("runs", []):
        if page["skipped"]:
            cell = f"skipped: {page['skipped']}"
        else:
            cell = (
                f"ours +{ms(page['ours_added_p50'])} (p95 {ms(page['ours_added_p95'])}), floor "
                f"+{ms(page['floor_added_p50'])}: our app adds {ms(page['above_floor_p50'])}"
            )
            if page["errors"]:
                cell += f" ({len(page['errors'])} errors)"
        rows.append(
            [
                f"through the page, {page['run_seconds']:g} s run: added over the known time, p50",
                cell,
                "",
                "",
                "",
                "(what a user feels; floor = Gradio's own round trip)",
                "",
            ]
        )
    return rows


def table(results: dict[str, Any], plan: Plan) -> str:
    header = [
        "measure",
        "ours",
        "official create+wait",
        "official run()",
        "ours / official (wait / run)",
        "target",
        "result",
    ]
    rows = latency_rows(results, plan) + request_rows(results, plan)
    rows += concurrency_rows(results) + floor_rows(results) + other_rows(results)
    for part in results.get("failed_parts", {}):
        rows.append([f"{part}: FAILED (traceback in the JSON)", "", "", "", "", "", ""])
    return markdown_table(header, rows)


# ---- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    parser.add_argument("--runs", type=int, help="runs per duration for the latency part")
    parser.add_argument(
        "--variant",
        default="current",
        help="our service as it is (current), or with the fixes of bench/proposed.py applied "
        "(proposed; or proposed:<fix>,<fix> for some of them)",
    )
    parser.add_argument(
        "--official-both",
        action="store_true",
        help="also run the official client with the emulator's SSE stream off "
        "(it never reads urls.stream, so by default it is run with the stream on only)",
    )
    parser.add_argument("--table", type=Path, help="print the table of a saved results file")
    args = parser.parse_args(argv)
    if args.table:
        saved = json.loads(args.table.read_text())
        print(f"`{saved['command']}` ({saved['started']}, {saved.get('variant', 'current')})\n")
        print(table(saved, Plan(**saved["plan"])))
        return
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")
    plan = make_plan(args)
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    started = time.perf_counter()
    results: dict[str, Any] = {
        "command": command.strip(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "system": platform.platform(),
            "load_average_before": os.getloadavg(),
        },
        "plan": plan.__dict__,
        "variant": args.variant,
        "notes": {
            "queue_seconds": latency.QUEUE_SECONDS,
            "audio_seconds": latency.AUDIO_SECONDS,
            "latency_stagger_seconds": latency.STAGGER,
        },
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    tags = ("-quick" if args.quick else "") + ("" if args.variant == "current" else "-proposed")
    path = RESULTS_DIR / f"{stamp}{tags}.json"
    runners = {
        "latency": lambda e: part_latency(e, plan, args.variant),
        "concurrency": lambda e: part_concurrency(e, plan, args.variant),
        "library": lambda e: part_library(plan),
        "coldstart": lambda e: part_coldstart(e, plan),
        "page": lambda e: part_page(e, plan, args.variant),
    }
    with EmulatorProcess() as emulator:
        for part in PARTS:
            if part not in parts:
                continue
            try:
                results[part] = runners[part](emulator)
            except Exception:  # one broken part must not lose the others' numbers
                log(f"{part} failed:\n{traceback.format_exc()}")
                results.setdefault("failed_parts", {})[part] = traceback.format_exc()
            path.write_text(json.dumps(results, indent=1, default=str))  # saved as we go
    results["wall_seconds"] = time.perf_counter() - started
    results["machine"]["load_average_after"] = os.getloadavg()
    results["table"] = table(results, plan)
    path.write_text(json.dumps(results, indent=1, default=str))
    minutes = results["wall_seconds"] / 60
    print(f"`{results['command']}` ({minutes:.1f} min, {results['started']}, {args.variant})\n")
    print(results["table"])
    shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
    print(f"\nraw results: {shown}")


if __name__ == "__main__":
    main()
