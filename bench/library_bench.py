"""Benchmark: how fast a page of a 10,000-run library comes back.

Run by hand: `python -m bench.library_bench [--runs 10000] [--queries 200] [--keep DIR]`.
Builds a library in a temporary folder through the library's own insert path, then times
page queries as the history gallery makes them and prints p50/p95 in milliseconds.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from services.library import Library
from services.musicgen import MODEL_VERSIONS, GenerationRequest

WORDS = (
    "lo-fi",
    "jazz",
    "ambient",
    "drone",
    "techno",
    "house",
    "piano",
    "strings",
    "choir",
    "cinematic",
    "orchestral",
    "synth",
    "pads",
    "warm",
    "bass",
    "funky",
    "horns",
    "drums",
    "808",
    "trap",
    "bossa",
    "nova",
    "guitar",
    "acoustic",
    "violin",
    "cello",
    "dark",
    "bright",
    "epic",
    "calm",
    "upbeat",
    "chill",
    "vaporwave",
    "chiptune",
    "reggae",
    "folk",
    "blues",
    "soul",
    "gospel",
    "metal",
    "punk",
    "disco",
)
# Succeeded runs need real audio files; the page query does not care, so these suffice.
STATUSES = ["failed", "canceled", "lost"]
HEAVY_OWNER = "visitor-heavy"  # one visitor holding half the library


def _prompt(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))


def _logs(rng: random.Random, seed: int) -> str:
    lines = [f"Using seed {seed}"] + [f"  {i * 10:3d} /  400" for i in range(1, 41)]
    return "\n".join(lines) * rng.randint(1, 3)


def build(lib: Library, runs: int, rng: random.Random) -> float:
    """Insert `runs` finished runs spread over a year; returns the seconds it took."""
    models = list(MODEL_VERSIONS)
    start = time.perf_counter()
    base = time.time() - 365 * 86400
    for i in range(runs):
        owner = HEAVY_OWNER if i % 2 == 0 else f"visitor-{rng.randrange(50)}"
        seed = rng.randrange(2**31)
        req = GenerationRequest(
            prompt=_prompt(rng),
            model_version=rng.choice(models),
            duration=rng.choice([8, 15, 30]),
            temperature=round(rng.uniform(0.5, 1.5), 2),
        )
        lib.add_run(
            owner,
            req.to_dict(),
            status=rng.choice(STATUSES),
            created_at=base + i * (365 * 86400 / runs),
            prediction_id=f"p{i:025d}",
            seed=seed,
            predict_time=rng.uniform(5, 60),
            logs_tail=_logs(rng, seed),
            error="Something went wrong",
        )
    return time.perf_counter() - start


def _time(samples: list[float], query: Callable[[], object]) -> None:
    start = time.perf_counter()
    query()
    samples.append((time.perf_counter() - start) * 1000)


def _report(name: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(
        f"{name:<28} n={len(ordered):<4} p50={statistics.median(ordered):7.2f} ms"
        f"  p95={p95:7.2f} ms  max={ordered[-1]:7.2f} ms"
    )


def bench(lib: Library, queries: int, rng: random.Random) -> dict[str, list[float]]:
    """Time `queries` page queries in four kinds, interleaved."""
    per_page = 12
    total_pages = lib.list(per_page=per_page).pages
    heavy_pages = lib.list(HEAVY_OWNER, per_page=per_page).pages
    kinds: dict[str, Callable[[], object]] = {
        "first page (everything)": lambda: lib.list(page=1, per_page=per_page),
        "deep page (everything)": lambda: lib.list(
            page=rng.randint(total_pages // 2, total_pages), per_page=per_page
        ),
        "search in prompt": lambda: lib.list(
            search=" ".join(rng.sample(WORDS, rng.choice([1, 2]))),
            page=rng.randint(1, 3),
            per_page=per_page,
        ),
        "one owner, any page": lambda: lib.list(
            HEAVY_OWNER, page=rng.randint(1, heavy_pages), per_page=per_page
        ),
        "one owner + filters": lambda: lib.list(
            f"visitor-{rng.randrange(50)}",
            status=rng.choice(["failed", "lost"]),
            model=rng.choice(list(MODEL_VERSIONS)),
            per_page=per_page,
        ),
    }
    samples: dict[str, list[float]] = {name: [] for name in kinds}
    names = list(kinds)
    for i in range(queries):
        name = names[i % len(names)]
        _time(samples[name], kinds[name])
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--keep", type=Path, help="build the library here and keep it")
    args = parser.parse_args()
    rng = random.Random(1234)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        with Library(folder) as lib:
            seconds = build(lib, args.runs, rng)
            size_mb = (folder / "library.sqlite3").stat().st_size / 1024 / 1024
            print(
                f"built {args.runs} runs in {seconds:.1f} s "
                f"({seconds / args.runs * 1000:.2f} ms a run), database {size_mb:.1f} MB"
            )
            samples = bench(lib, args.queries, rng)
            everything: list[float] = []
            for name, times in samples.items():
                _report(name, times)
                everything += times
            _report("all page queries", everything)
            counts: list[float] = []
            for _ in range(20):
                _time(counts, lambda: lib.counts(HEAVY_OWNER))
            _report("counts (one owner)", counts)


if __name__ == "__main__":
    main()
