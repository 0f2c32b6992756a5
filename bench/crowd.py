"""A crowd on one Space (issue #20): 200 simulated visitors against `python app.py`.

    python -m bench.crowd                   # 200 visitors arriving over 40 s
    python -m bench.crowd --visitors 40     # a quicker look

The app runs as a Space would: shared (per-visitor identities), the host's Replicate token paying
for every visitor, both engines offered (Replicate, here the emulator in a process of its own
with Replicate's real limits; and the local engine on a tiny random-weight checkpoint). Spending
caps are off (MUSICGEN_MAX_RUNS_IN_FLIGHT=0): this measures load, not refusals (the caps and the
fair local queue come from sibling branches).

Visitors arrive evenly over `--arrival` seconds, each with gradio_client (a few shared Client
objects, one thread per visitor): half are page-like (they load the page first, as a browser
does), half are plain API callers. Three in four are light (one short take), one in four heavy
(four takes at once); `--local-share` of the takes (default one in twenty) run on the local
engine, the rest on Replicate. Everything on loopback. The crowd is bounded in time: a take still
waiting `--patience` seconds after the last arrival is given up (and reported as such).

Reported: errors (target 0: exceptions, or a take that did not succeed), the wait before a run
starts (time to the result minus the model's own time, p50 and p95, light and heavy, next to one
take alone), the token's reads in its busiest minute, the app's memory growth (RSS after the
crowd minus after warm-up), and runs lost (a prediction the emulator made that the library does
not hold with its audio; target 0).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.emulator import EmulatorProcess, free_port
from bench.polling_budget import _busiest_minute, _reads
from bench.stats import markdown_table, p50, p95, secs

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 8
TAKE_TIMEOUT = 300.0
UNFINISHED = "unfinished"  # still waiting when the crowd's time was up
SETTLE_TIMEOUT = 120.0


@dataclass
class Take:
    visitor: int
    heavy: bool
    engine: str
    elapsed: float = 0.0
    predict_time: float | None = None
    status: str | None = None
    error: str | None = None
    library_id: str | None = None

    @property
    def wait(self) -> float | None:
        if self.status != "succeeded" or self.predict_time is None:
            return None
        return max(0.0, self.elapsed - self.predict_time)


@dataclass
class Report:
    visitors: int
    takes: list[Take] = field(default_factory=list)
    alone: dict[str, float] = field(default_factory=dict)
    reads_busiest_minute: int = 0
    throttled: int = 0
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0
    lost: int = 0
    predictions: int = 0
    wall: float = 0.0

    def waits(self, heavy: bool, engine: str | None = None) -> list[float]:
        return [
            t.wait
            for t in self.takes
            if t.heavy == heavy and (engine is None or t.engine == engine) and t.wait is not None
        ]

    def table(self) -> str:
        errors = [t for t in self.takes if t.status not in ("succeeded", UNFINISHED)]
        unfinished = [t for t in self.takes if t.status == UNFINISHED]
        rows: list[list[object]] = [
            ["visitors / takes", f"{self.visitors} / {len(self.takes)}"],
            ["errors (target 0)", f"{len(errors)}"],
            ["takes still waiting when the time was up", f"{len(unfinished)}"],
        ]
        for engine in ("replicate", "local"):
            light, heavy = self.waits(False, engine), self.waits(True, engine)
            alone = secs(self.alone.get(engine))
            rows.append(
                [
                    f"wait before start, {engine}: light p50 / p95",
                    f"{secs(p50(light))} / {secs(p95(light))} (alone {alone})",
                ]
            )
            rows.append(
                [
                    f"wait before start, {engine}: heavy p50 / p95",
                    f"{secs(p50(heavy))} / {secs(p95(heavy))}",
                ]
            )
        grew = self.rss_after_mb - self.rss_before_mb
        memory = f"{self.rss_before_mb:.0f} MB → {self.rss_after_mb:.0f} MB (+{grew:.0f} MB)"
        reads = f"{self.reads_busiest_minute} (429s: {self.throttled})"
        rows += [
            ["reads in the busiest minute (one token)", reads],
            ["app memory (RSS) after warm-up → after", memory],
            ["runs lost (target 0)", f"{self.lost} of {self.predictions} predictions"],
            ["wall", secs(self.wall, 0)],
        ]
        kinds = Counter(f"{t.status}: {(t.error or '')[:60]}" for t in errors)
        for kind, count in kinds.most_common(4):
            rows.append([f"errors: {kind}", count])
        return markdown_table(["measure", "value"], rows)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _start_app(env: dict[str, str], log: Path) -> tuple[Any, str]:
    import subprocess

    port = free_port()
    full = {**os.environ, **env, "GRADIO_SERVER_PORT": str(port)}
    full.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "app.py"], cwd=ROOT, env=full, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/"
    give_up = time.monotonic() + 180
    while time.monotonic() < give_up:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited early; see {log}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("app.py did not start in time")


def _one_take(client: Any, take: Take, duration: int, deadline: float | None = None) -> Take:
    started = time.monotonic()
    job = None
    try:
        job = client.submit(
            prompt="crowd: rock drums and piano",
            duration=duration,
            engine=take.engine,
            api_name="/generate",
        )
        wait = TAKE_TIMEOUT if deadline is None else max(0.1, deadline - time.monotonic())
        try:
            _, record = job.result(timeout=wait)
        except TimeoutError:
            take.status, take.elapsed = UNFINISHED, time.monotonic() - started
            job.cancel()
            return take
        take.status = record.get("status")
        take.error = record.get("error")
        take.predict_time = record.get("predict_time")
        take.library_id = record.get("library_id")
    except Exception as exc:  # an error a visitor would see
        take.status, take.error = "error", f"{type(exc).__name__}: {exc}"
    take.elapsed = time.monotonic() - started
    return take


def _visitor(
    clients: list[Any],
    url: str,
    n: int,
    heavy: bool,
    page: bool,
    local_share: float,
    deadline: float,
    rng: random.Random,
) -> list[Take]:
    client = clients[n % len(clients)]
    if page:  # a browser loads the page (and its config) before pressing Generate
        with httpx.Client(timeout=60) as http:
            http.get(url)
            http.get(url + "config")
    count = 4 if heavy else 1
    engines = ["local" if rng.random() < local_share else "replicate" for _ in range(count)]
    takes = [Take(n, heavy, engine) for engine in engines]
    duration = 2 if heavy else 1
    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        done = pool.map(lambda t: _one_take(client, t, duration, deadline), takes)
        return list(done)


def run(
    visitors: int, arrival: float, patience: float, local_share: float = 0.05, seed: int = 20
) -> Report:
    from gradio_client import Client

    from services.library import Library
    from tests.support.tiny_musicgen import build_checkpoint

    report = Report(visitors)
    rng = random.Random(seed)
    with (
        tempfile.TemporaryDirectory(prefix="bench-crowd-") as scratch,
        EmulatorProcess(
            read_limit_per_minute=3000,
            create_limit_per_minute=600,
            queue_seconds=0.5,
            run_seconds=1.0,
            stream=False,
        ) as emulator,
    ):
        folder = build_checkpoint(Path(scratch) / "tiny", "text")
        data = Path(scratch) / "data"
        env = {
            "REPLICATE_BASE_URL": emulator.base_url,
            "REPLICATE_API_TOKEN": emulator.token,
            "MUSICGEN_DATA_DIR": str(data),
            "MUSICGEN_SHARED": "1",
            "MUSICGEN_ENGINE": "auto",
            "MUSICGEN_LOCAL_MODEL": str(folder),
            "MUSICGEN_DEVICE": "cpu",
            "MUSICGEN_MAX_RUNS_IN_FLIGHT": "0",
            "SPACE_ID": "",
            "SPACE_HOST": "",
            "MUSICGEN_PUBLIC_URL": "",
        }
        proc, url = _start_app(env, Path(scratch) / "app.log")
        try:
            clients = [
                Client(
                    url,
                    verbose=False,
                    max_workers=visitors,
                    # A crowd queues: a visitor waits for their turn, not for httpx's 5 s.
                    httpx_kwargs={"timeout": httpx.Timeout(TAKE_TIMEOUT)},
                    download_files=str(Path(scratch) / "downloads"),
                    analytics_enabled=False,
                )
                for _ in range(CLIENTS)
            ]
            for engine in ("replicate", "local"):  # warm-up (loads the local model), then alone
                _one_take(clients[0], Take(-1, False, engine), 1)
                alone = _one_take(clients[0], Take(-1, False, engine), 1)
                if alone.wait is not None:
                    report.alone[engine] = alone.wait
            report.rss_before_mb = _rss_mb(proc.pid)
            emulator.reset()
            started = time.monotonic()
            deadline = started + arrival + patience
            plan = [(n, rng.random() < 0.25, rng.random() < 0.5) for n in range(visitors)]
            with concurrent.futures.ThreadPoolExecutor(max_workers=visitors) as pool:
                futures = []
                for n, heavy, page in plan:
                    at = started + arrival * n / max(1, visitors)
                    time.sleep(max(0.0, at - time.monotonic()))
                    futures.append(
                        pool.submit(
                            _visitor,
                            clients,
                            url,
                            n,
                            heavy,
                            page,
                            local_share,
                            deadline,
                            random.Random(n),
                        )
                    )
                for future in futures:
                    report.takes += future.result()
            report.wall = time.monotonic() - started
            report.rss_after_mb = _rss_mb(proc.pid)
            library = Library(data)
            give_up = time.monotonic() + SETTLE_TIMEOUT
            while library.in_flight() and time.monotonic() < give_up:
                time.sleep(0.5)  # runs a visitor gave up on are still being filed
            requests = emulator.requests()
            report.reads_busiest_minute = _busiest_minute([r["time"] for r in _reads(requests)])
            report.throttled = sum(1 for r in requests if r.get("status") == 429)
            predictions = emulator.predictions()
            report.predictions = len(predictions)
            for prediction in predictions:
                record = library.find_by_prediction(prediction["id"])
                kept = record is not None and (
                    record.status != "succeeded" or library.audio_file(record) is not None
                )
                if record is None or not kept or record.status in ("lost", "downloading"):
                    report.lost += 1
            library.close()
            for client in clients:
                client.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except Exception:
                proc.kill()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.crowd")
    parser.add_argument("--visitors", type=int, default=200)
    parser.add_argument("--arrival", type=float, default=40.0, help="seconds they arrive over")
    parser.add_argument(
        "--patience", type=float, default=180.0, help="seconds after the last arrival to finish"
    )
    parser.add_argument("--local-share", type=float, default=0.05, help="takes run locally")
    args = parser.parse_args()
    report = run(args.visitors, args.arrival, args.patience, args.local_share)
    print(report.table())


if __name__ == "__main__":
    main()
