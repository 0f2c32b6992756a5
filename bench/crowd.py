"""A crowd on one Space (issue #20): 200 simulated visitors against `python app.py`.

    python -m bench.crowd                   # 200 visitors over 40 s, polling, then webhooks
    python -m bench.crowd --visitors 40 --only polling    # a quicker look

The app runs as a Space would: shared (per-visitor identities and the default caps: 4 runs in
flight per visitor, 3 waiting for the local engine), behind a proxy (MUSICGEN_BEHIND_PROXY: the
client is the address the proxy puts in X-Forwarded-For), the host's Replicate token paying for
every visitor, both engines offered (Replicate, here the emulator in a process of its own with
Replicate's real limits; and the local engine on a tiny random-weight checkpoint). Each mode
starts its own app: `polling` follows runs by polls alone, `webhooks` gives the app its own
loopback address as its public URL (as SPACE_HOST does on a Space), so runs are created with
webhooks and polls are the fallback.

Visitors arrive evenly over `--arrival` seconds, each from an address of their own (a public
IPv4 address in X-Forwarded-For on every join), through gradio_client, one thread per
visitor. Eight gradio_client sessions carry every visitor's takes, each join saying its
visitor's address (`--sessions take`: a session per take; `--sessions visitor`: per visitor, as
one browser tab has); each session's Client is copied from one Client that asked the app for its
config and API once, so the app sees only the takes' own requests and the sessions' heartbeats.
Their reader reads on when the server closes a session's stream while events of it still wait
(gradio_client 2.7.2 would end such an event with CancelledError, though the app runs it). A new
session costs the app too: Gradio builds its copy of every block's config at its first event.
Half are page-like (they load the page and its config first, as a browser does), half plain API
callers. Three in four are light (one 1 s take), one in four heavy (four 2 s takes at once);
`--local-share` of the takes (default one in twenty) run on the local engine, the rest on
Replicate. Everything on loopback. A take still waiting `--patience` seconds after the last
arrival is given up (and reported as such).

Reported: errors (target 0: exceptions, or a take that did not succeed), the wait before a run
starts (time to the result minus the model's own time, p50 and p95, light and heavy, next to one
take alone; target: a light visitor's p95 at most one run longer than alone, i.e. alone's wait
plus alone's whole time from call to result; for the local engine one batch longer, i.e.
alone's wait plus the time a full batch of heavy takes took alone), the token's reads in its
busiest minute (target 2,400 polling, 1,000 with webhooks, and no 429), the app's memory
growth (RSS after the crowd minus after warm-up), each process's CPU, and runs lost (target
0): a prediction the emulator made that the library does not know, or has not filed, or whose
paid audio it does not hold; or a take the API reported succeeded whose audio is not in the
library. The simulated visitors and the emulator run at a lower priority (`--nice`) than the
app: on a Space they are on machines of their own.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import functools
import math
import os
import random
import subprocess
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
from bench.stats import cpu_seconds, markdown_table, p50, p95, secs, verdict
from services.engines.local.batch import DEFAULT_MAX_BATCH

ROOT = Path(__file__).resolve().parent.parent
TAKE_TIMEOUT = 300.0
UNFINISHED = "unfinished"  # still waiting when the crowd's time was up
SETTLE_TIMEOUT = 120.0
READ_TARGETS = {"polling": 2400, "webhooks": 1000}
CORES = os.cpu_count() or 1
WARM_UP_ADDRESS = "81.1.0.1"
# `--sessions shared`: this many gradio_client sessions carry every visitor's takes.
SHARED_SESSIONS = 8
# A reader whose stream the server closed goes on for the events still waiting, this many times
# at most (a pause between): the server has their messages; a cancelled one never answers.
READ_ON_TRIES = 20
READ_ON_PAUSE = 0.05


def address(visitor: int) -> str:
    """Visitor n's own public address (a different one for every visitor)."""
    return f"81.2.{visitor // 250}.{visitor % 250 + 1}"


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
    mode: str
    visitors: int
    takes: list[Take] = field(default_factory=list)
    alone: dict[str, Take] = field(default_factory=dict)
    # The local engine's longest pass in this crowd, alone: a full batch of heavy takes.
    batch_alone: float | None = None
    reads_busiest_minute: int = 0
    throttled: int = 0
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0
    lost: Counter[str] = field(default_factory=Counter)
    predictions: int = 0
    wall: float = 0.0
    # CPU seconds each process used from the first arrival to the last result.
    cpu: dict[str, float] = field(default_factory=dict)

    def errors(self) -> list[Take]:
        return [t for t in self.takes if t.status not in ("succeeded", UNFINISHED)]

    def unfinished(self) -> list[Take]:
        return [t for t in self.takes if t.status == UNFINISHED]

    def waits(self, heavy: bool, engine: str) -> list[float]:
        mine = [t for t in self.takes if t.heavy == heavy and t.engine == engine]
        return [t.wait for t in mine if t.wait is not None]

    def light_target(self, engine: str) -> float | None:
        """One run (Replicate) or batch (local) longer than alone: alone's wait plus alone's
        whole call, or plus a full batch's."""
        alone = self.alone.get(engine)
        if alone is None or alone.wait is None:
            return None
        if engine == "local":
            return None if self.batch_alone is None else alone.wait + self.batch_alone
        return alone.wait + alone.elapsed

    def light_ok(self, engine: str) -> bool | None:
        target, light = self.light_target(engine), self.waits(False, engine)
        if target is None or not light:
            return None
        return p95(light) <= target


def _cell(value: str, ok: bool | None = None) -> str:
    return value if ok is None else f"{value}: {verdict(ok)}"


def table(reports: list[Report]) -> str:
    """One column per mode, then the target."""
    rows: list[list[object]] = []

    def row(measure: str, cells: list[str], target: str = "") -> None:
        rows.append([measure, *cells, target])

    row("visitors / takes", [f"{r.visitors} / {len(r.takes)}" for r in reports])
    row("errors", [_cell(str(len(r.errors())), not r.errors()) for r in reports], "0")
    row(
        "takes still waiting when the time was up",
        [_cell(str(len(r.unfinished())), not r.unfinished()) for r in reports],
        "0",
    )
    for engine in ("replicate", "local"):
        cells = []
        for r in reports:
            light, alone = r.waits(False, engine), r.alone.get(engine)
            alone_text = secs(alone.wait) if alone is not None else "n/a"
            text = (
                f"{secs(p50(light))} / {secs(p95(light))} (alone {alone_text}; "
                f"≤ {secs(r.light_target(engine))}; n={len(light)})"
            )
            cells.append(_cell(text, r.light_ok(engine)))
        row(
            f"wait before start, {engine}: light p50 / p95",
            cells,
            "p95 ≤ one run (local: one batch) longer than alone",
        )
        row(
            f"wait before start, {engine}: heavy p50 / p95",
            [
                f"{secs(p50(r.waits(True, engine)))} / {secs(p95(r.waits(True, engine)))} "
                f"(n={len(r.waits(True, engine))})"
                for r in reports
            ],
        )
    row(
        "reads in the busiest minute (one token), 429s",
        [
            _cell(
                f"{r.reads_busiest_minute:,}, {r.throttled}",
                r.reads_busiest_minute <= READ_TARGETS[r.mode] and not r.throttled,
            )
            for r in reports
        ],
        "≤ 2,400 polling / ≤ 1,000 webhooks, no 429",
    )
    row(
        "app memory (RSS) after warm-up → after",
        [
            f"{r.rss_before_mb:.0f} → {r.rss_after_mb:.0f} MB "
            f"(+{r.rss_after_mb - r.rss_before_mb:.0f} MB)"
            for r in reports
        ],
        "informative (no target in #20)",
    )
    row(
        "runs lost",
        [
            _cell(f"{sum(r.lost.values())} ({r.predictions} predictions)", not r.lost)
            for r in reports
        ],
        "0",
    )
    row("wall (arrivals to the last result)", [secs(r.wall, 0) for r in reports])
    row(
        f"CPU in that time: app / emulator / load generator (of {CORES} cores × wall)",
        [
            " / ".join(f"{r.cpu.get(k, math.nan):.0f}" for k in ("app", "emulator", "generator"))
            + f" s (of {CORES * r.wall:.0f} s)"
            for r in reports
        ],
        "informative: the machine's share of each",
    )
    for r in reports:
        kinds = Counter(f"{t.status}: {(t.error or '')[:70]}" for t in r.errors())
        for kind, count in kinds.most_common(4):
            rows.append([f"{r.mode} errors: {kind}", count, "", ""][: 2 + len(reports)])
        for kind, count in r.lost.most_common():
            rows.append([f"{r.mode} lost: {kind}", count, "", ""][: 2 + len(reports)])
    return markdown_table(["measure", *(r.mode for r in reports), "target"], rows)


def _cpu_now(app: int, emulator: int) -> dict[str, float]:
    return {
        "app": cpu_seconds(app),
        "emulator": cpu_seconds(emulator),
        "generator": cpu_seconds(os.getpid()),
    }


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def _start_app(env: dict[str, str], port: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
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


@functools.cache
def _session_class() -> type[Any]:
    """gradio_client's Client with a session of its own, taking the app's config, API description
    and endpoints from a loaded Client instead of asking the app again or parsing its 170-odd
    events (20 ms of CPU a take, against 2 ms). gradio_client is imported only when a crowd runs."""
    from gradio_client import Client

    class OwnSession(Client):  # type: ignore[misc]
        def __init__(self, loaded: Client, where: str | None, events: int = 1) -> None:
            self._loaded = loaded
            super().__init__(
                loaded.src,
                verbose=False,
                # A thread per event at once, and the two helpers gradio_client gives each.
                max_workers=events,
                httpx_kwargs=dict(loaded.httpx_kwargs),  # Client pops from the dict it is given
                # The stream and heartbeat too, not only joins; a session shared by visitors
                # has none (each join says its own: its headers yield to the Client's).
                headers={"X-Forwarded-For": where} if where else None,
                download_files=loaded.download_files,
                ssl_verify=loaded.ssl_verify,
                analytics_enabled=False,
            )
            self.config = loaded.config
            self.endpoints = {}
            for fn_index, endpoint in loaded.endpoints.items():
                mine = copy.copy(endpoint)
                mine.client = self
                # An endpoint still bound to `loaded` would send this take on its session.
                assert mine.client is self
                self.endpoints[fn_index] = mine

        def _get_config(self) -> dict[str, Any]:
            self.cookies.update(
                {k: v for k, v in self._loaded.cookies.items() if k not in self.cookies}
            )
            # No events: their endpoints are the loaded Client's, copied above.
            return {**self._loaded.config, "dependencies": []}

        def _get_api_info(self) -> dict[str, Any]:
            return self._loaded._info  # type: ignore[no-any-return]

        def stream_messages(self, protocol: str, session_hash: str) -> None:
            """gradio_client's reader of the session's stream, reading on when the server
            closed it while events of this session were still waiting for their answer.

            The server closes a session's stream once none of its events is pending; an event
            that joined just then is registered on the reader about to end, and gradio_client
            2.7.2 ends it with CancelledError although the app runs it to the end (the server
            keeps its messages for the next reader). A browser's page meets the same gap only
            when its own events overlap that closely.
            """
            for _ in range(READ_ON_TRIES):
                super().stream_messages(protocol, session_hash)
                with self.pending_lock:
                    if not self.pending_event_ids:
                        return
                    self.stream_open = True  # this reader goes on for them
                time.sleep(READ_ON_PAUSE)

    return OwnSession


def _loaded_client(url: str, downloads: Path) -> Any:
    """The one Client that asks the app for its config and API; every take's is copied from it."""
    from gradio_client import Client

    return Client(
        url,
        verbose=False,
        # A crowd queues: a visitor waits for their turn, not for httpx's 5 s.
        httpx_kwargs={"timeout": httpx.Timeout(TAKE_TIMEOUT)},
        download_files=str(downloads),
        analytics_enabled=False,
    )


def _release(client: Any) -> None:
    """Lets a take's Client go without waiting: its heartbeat ends at the app's next beat, its
    pools' threads as their work ends. (Client.close would wait up to 1 s for the beat.)"""
    client._kill_heartbeat.set()
    for pool in (client.executor, client.helper_executor, client.stream_executor):
        pool.shutdown(wait=False)


def _takes_in_a_session(
    loaded: Any, takes: list[Take], duration: int, where: str, deadline: float | None = None
) -> list[Take]:
    """Takes at once in one session of their own (made before the clock starts: a page has its
    session before the click)."""
    client = _session_class()(loaded, where, len(takes))
    try:
        return _takes_on(client, takes, duration, deadline)
    finally:
        _release(client)


def _takes_on(
    client: Any, takes: list[Take], duration: int, deadline: float | None, where: str | None = None
) -> list[Take]:
    """Takes at once on `client`'s session (`where`: the address each join says, when the
    session is shared)."""
    with concurrent.futures.ThreadPoolExecutor(len(takes)) as pool:
        return list(pool.map(lambda t: _timed_take(client, t, duration, deadline, where), takes))


def _one_take(
    loaded: Any, take: Take, duration: int, where: str, deadline: float | None = None
) -> Take:
    """One take in a session of its own."""
    return _takes_in_a_session(loaded, [take], duration, where, deadline)[0]


def _timed_take(
    client: Any, take: Take, duration: int, deadline: float | None, where: str | None = None
) -> Take:
    started = time.monotonic()
    job = None
    try:
        job = client.submit(
            prompt="crowd: rock drums and piano",
            duration=duration,
            engine=take.engine,
            api_name="/generate",
            headers={"X-Forwarded-For": where} if where else None,
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


def _full_batch(loaded: Any) -> float:
    """Seconds until a full local batch of heavy takes (2 s each, from as many visitors)
    is done, with nothing else running: the longest pass a light visitor can arrive behind."""
    takes = [Take(-2 - i, True, "local") for i in range(DEFAULT_MAX_BATCH["cpu"])]
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(takes)) as pool:
        done = list(pool.map(lambda t: _one_take(loaded, t, 2, f"81.1.1.{t.visitor + 10}"), takes))
    if any(t.status != "succeeded" for t in done):
        raise RuntimeError(f"the full batch alone failed: {[t.error for t in done]}")
    return time.monotonic() - started


def _shared_sessions(loaded: Any, visitors: int) -> list[Any]:
    """SHARED_SESSIONS Clients, each the session of a share of the visitors (a thread each)."""
    return [_session_class()(loaded, None, visitors) for _ in range(SHARED_SESSIONS)]


def _visitor(
    loaded: Any,
    url: str,
    n: int,
    heavy: bool,
    page: bool,
    local_share: float,
    deadline: float,
    rng: random.Random,
    sessions: str | list[Any] = "take",
) -> list[Take]:
    where = address(n)
    if page:  # a browser loads the page (and its config) before pressing Generate
        with httpx.Client(timeout=60, headers={"X-Forwarded-For": where}) as http:
            http.get(url)
            http.get(url + "config")
    count = 4 if heavy else 1
    engines = ["local" if rng.random() < local_share else "replicate" for _ in range(count)]
    takes = [Take(n, heavy, engine) for engine in engines]
    duration = 2 if heavy else 1
    if isinstance(sessions, list):  # shared: each join says who connected, as the proxy does
        return _takes_on(sessions[n % len(sessions)], takes, duration, deadline, where)
    if sessions == "visitor":  # as one browser tab, or one gradio_client Client, has
        return _takes_in_a_session(loaded, takes, duration, where, deadline)
    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        done = pool.map(lambda t: _one_take(loaded, t, duration, where, deadline), takes)
        return list(done)


def _lost(predictions: list[dict[str, Any]], library: Any, takes: list[Take]) -> Counter[str]:
    """Runs whose result is not in the library at the end, by kind (see the module docstring)."""
    lost: Counter[str] = Counter()
    for prediction in predictions:
        record = library.find_by_prediction(prediction["id"])
        if record is None:
            lost["a prediction the library does not know"] += 1
        elif record.in_flight or record.status in ("lost", "downloading"):
            lost[f"not filed (still {record.status})"] += 1
        elif prediction.get("status") == "succeeded" and (
            record.status != "succeeded" or library.audio_file(record) is None
        ):
            lost[f"paid, audio not kept (filed {record.status})"] += 1
    for take in takes:
        if take.status == "succeeded":
            record = library.get(take.library_id) if take.library_id else None
            if record is None or library.audio_file(record) is None:
                lost[f"a {take.engine} take reported succeeded, its audio not kept"] += 1
    return lost


def run(
    emulator: EmulatorProcess,
    scratch: Path,
    mode: str,
    visitors: int,
    arrival: float,
    patience: float,
    local_share: float = 0.05,
    seed: int = 20,
    nice: int = 10,
    sessions: str = "shared",
) -> Report:
    from services.library import Library
    from tests.support.tiny_musicgen import build_checkpoint

    # Or gradio_client starts a telemetry thread per Client, whatever analytics_enabled says.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    report = Report(mode, visitors)
    rng = random.Random(seed)
    folder = scratch / "tiny"
    if not folder.exists():
        build_checkpoint(folder, "text")
    data = scratch / f"data-{mode}"
    port = free_port()
    env = {
        "REPLICATE_BASE_URL": emulator.base_url,
        "REPLICATE_API_TOKEN": emulator.token,
        "MUSICGEN_DATA_DIR": str(data),
        "MUSICGEN_SHARED": "1",
        "MUSICGEN_BEHIND_PROXY": "1",
        "MUSICGEN_ENGINE": "auto",
        "MUSICGEN_LOCAL_MODEL": str(folder),
        "MUSICGEN_DEVICE": "cpu",
        "SPACE_ID": "",
        "SPACE_HOST": "",
        # With webhooks, Replicate (the emulator) reaches the app's own route on loopback.
        "MUSICGEN_PUBLIC_URL": f"http://127.0.0.1:{port}" if mode == "webhooks" else "",
    }
    emulator.reset()
    proc, url = _start_app(env, port, scratch / f"app-{mode}.log")
    try:
        loaded = _loaded_client(url, scratch / "downloads")

        def crowd() -> tuple[set[str], int]:
            """Warm-up, one take alone, then the crowd; the emulator's marks before it."""
            for engine in ("replicate", "local"):  # warm-up (loads the local model), then alone
                _one_take(loaded, Take(-1, False, engine), 1, WARM_UP_ADDRESS)
                report.alone[engine] = _one_take(loaded, Take(-1, False, engine), 1, "81.1.0.2")
            report.batch_alone = _full_batch(loaded)
            report.rss_before_mb = _rss_mb(proc.pid)
            warm_ids = {p["id"] for p in emulator.predictions()}
            requests_before = len(emulator.requests())
            cpu_before = _cpu_now(proc.pid, emulator.pid)
            started = time.monotonic()
            deadline = started + arrival + patience
            plan = [(n, rng.random() < 0.25, rng.random() < 0.5) for n in range(visitors)]
            shared = _shared_sessions(loaded, visitors) if sessions == "shared" else None
            with concurrent.futures.ThreadPoolExecutor(max_workers=visitors) as pool:
                futures = []
                for n, heavy, page in plan:
                    at = started + arrival * n / max(1, visitors)
                    time.sleep(max(0.0, at - time.monotonic()))
                    futures.append(
                        pool.submit(
                            _visitor,
                            loaded,
                            url,
                            n,
                            heavy,
                            page,
                            local_share,
                            deadline,
                            random.Random(n),
                            shared if shared is not None else sessions,
                        )
                    )
                for future in futures:
                    report.takes += future.result()
            for client in shared or []:
                _release(client)
            report.wall = time.monotonic() - started
            cpu_after = _cpu_now(proc.pid, emulator.pid)
            report.cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_after}
            report.rss_after_mb = _rss_mb(proc.pid)
            return warm_ids, requests_before

        # The simulated visitors run at a lower priority than the app and the emulator (every
        # thread the crowd starts inherits it): on a Space they are on their own machines.
        with concurrent.futures.ThreadPoolExecutor(1, initializer=os.nice, initargs=(nice,)) as one:
            warm_ids, requests_before = one.submit(crowd).result()
        library = Library(data)
        give_up = time.monotonic() + SETTLE_TIMEOUT
        while library.in_flight() and time.monotonic() < give_up:
            time.sleep(0.5)  # runs a visitor gave up on are still being filed
        requests = emulator.requests()[requests_before:]
        report.reads_busiest_minute = _busiest_minute([r["time"] for r in _reads(requests)])
        report.throttled = sum(1 for r in requests if r.get("status") == 429)
        predictions = [p for p in emulator.predictions() if p["id"] not in warm_ids]
        report.predictions = len(predictions)
        report.lost = _lost(predictions, library, report.takes)
        library.close()
        loaded.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.crowd")
    parser.add_argument("--visitors", type=int, default=200)
    parser.add_argument("--arrival", type=float, default=40.0, help="seconds they arrive over")
    parser.add_argument(
        "--patience", type=float, default=150.0, help="seconds after the last arrival to finish"
    )
    parser.add_argument("--local-share", type=float, default=0.05, help="takes run locally")
    parser.add_argument("--only", choices=["polling", "webhooks"], default=None)
    parser.add_argument(
        "--nice", type=int, default=10, help="the simulated visitors' niceness (0: the app's own)"
    )
    parser.add_argument(
        "--sessions",
        choices=["shared", "take", "visitor"],
        default="shared",
        help="gradio_client sessions: a few shared by the visitors (default; the load generator "
        "stays light), one per take, or one per visitor (as one browser tab). Each new session "
        "costs the app (Gradio builds its copy of every block's config) and the load generator "
        "(its stream, heartbeat and threads) on this machine's two cores",
    )
    args = parser.parse_args()
    modes = [m for m in ("polling", "webhooks") if args.only in (None, m)]
    reports = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-crowd-") as scratch,
        EmulatorProcess(
            read_limit_per_minute=3000,
            create_limit_per_minute=600,
            queue_seconds=0.5,
            run_seconds=1.0,
            stream=False,  # meta/musicgen offers no stream: followed by polls (or webhooks)
        ) as emulator,
    ):
        # The emulator stands in for Replicate, whose machines are not the Space's: it too
        # yields the cores to the app.
        os.setpriority(os.PRIO_PROCESS, emulator.pid, args.nice)
        for mode in modes:
            reports.append(
                run(
                    emulator,
                    Path(scratch),
                    mode,
                    args.visitors,
                    args.arrival,
                    args.patience,
                    args.local_share,
                    nice=args.nice,
                    sessions=args.sessions,
                )
            )
            print(table(reports[-1:]), flush=True)
    print()
    print(table(reports))


if __name__ == "__main__":
    main()
