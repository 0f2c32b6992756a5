"""The project's Replicate emulator in a process of its own, so its CPU and its event loop are
never charged to the client being measured.

`python -m bench.emulator --port P` serves it (the child side); `EmulatorProcess` starts one and
drives it through the emulator's `/_emulator/*` controls (the parent side).

One route is added in front of the emulator: `GET /v1/models/{owner}/{name}/versions/{id}`,
which the official client's `replicate.run("owner/name:version")` calls after the create.
The emulator does not serve it (it 404s), so it is answered here with the version object and
recorded like any other request, so the official client's request count stays honest.

The synthesised output is cached by (length, channels, format): rendering tones takes the
emulator ~60 ms for 8 s of stereo WAV, a cost of the instrument (Replicate has the file uploaded
before a run shows `succeeded`) that would otherwise land in every client's figure alike.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.stats import cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
VERSION_PATH = re.compile(r"^/v1/models/([^/]+)/([^/]+)/versions/([^/]+)$")
# Limits high enough that no measurement is throttled (the real ones are noted in the report).
UNTHROTTLED = {"create_limit_per_minute": 10**9, "read_limit_per_minute": 10**9}
# The emulator's SSE loop looks at a run every `stream_poll_seconds` (Replicate pushes events):
# 10 ms keeps that instrument delay well under the 50 ms target (the concurrency part, with
# 100 streams open, sets it back to the emulator's 50 ms to spare the CPU).
STREAM_POLL_SECONDS = 0.01


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _version_object(version_id: str) -> dict[str, Any]:
    """The model version as the API describes it; the Output schema is what `run()` reads."""
    return {
        "id": version_id,
        "created_at": "2024-07-11T10:47:18.716233Z",
        "cog_version": "0.8.6",
        "openapi_schema": {
            "openapi": "3.0.2",
            "info": {"title": "Cog", "version": "0.1.0"},
            "paths": {},
            "components": {"schemas": {"Output": {"type": "string", "format": "uri"}}},
        },
    }


def _with_version_route(app: Any, state: Any) -> Any:
    """Wrap the emulator's ASGI app with the model-version route, recorded in its own log."""
    from tests.emulator.app import parse_auth
    from tests.emulator.state import RecordedRequest

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        match = VERSION_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None or scope["method"] != "GET":
            await app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        scheme, token = parse_auth(headers.get("authorization"))
        headers.pop("authorization", None)
        record = RecordedRequest(
            method="GET",
            path=scope["path"],
            query={},
            headers=headers,
            token=token,
            auth_scheme=scheme,
            json=None,
            time=time.time(),
            status=200,
        )
        state.record(record)
        ok = token in state.config.tokens and match.group(3) in state.config.versions
        record.status = 200 if ok else 404
        body = json.dumps(_version_object(match.group(3)) if ok else {"detail": "Not found."})
        await send(
            {
                "type": "http.response.start",
                "status": record.status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})

    return wrapped


def _cache_rendering() -> None:
    """Render each (length, channels, format) once; seeds and prompts only change the tones."""
    from tests.emulator import state as emulator_state

    render = emulator_state.render_output
    cache: dict[tuple[Any, ...], bytes] = {}

    def cached(
        *, seconds: float, channels: int, output_format: str, prefix: Any = None, **rest: Any
    ) -> bytes:
        if prefix is not None:
            return render(
                seconds=seconds,
                channels=channels,
                output_format=output_format,
                prefix=prefix,
                **rest,
            )
        key = (seconds, channels, output_format)
        if key not in cache:
            cache[key] = render(
                seconds=seconds, channels=channels, output_format=output_format, **rest
            )
        return cache[key]

    emulator_state.render_output = cached


def serve(port: int, config: dict[str, Any]) -> None:
    """Run the emulator on 127.0.0.1:`port` until killed (the child process)."""
    import uvicorn

    from tests.emulator import EmulatorConfig, EmulatorState, create_app

    _cache_rendering()

    state = EmulatorState(EmulatorConfig(**config))
    app = _with_version_route(create_app(state), state)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
    )
    state.server = server
    server.run()


class EmulatorProcess:
    """A running emulator subprocess and its controls."""

    def __init__(self, **config: Any):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.token = "test-token"
        self._config = {
            "tokens": [self.token],
            "stream_poll_seconds": STREAM_POLL_SECONDS,
            **UNTHROTTLED,
            **config,
        }
        self._proc: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(base_url=self.base_url, timeout=30)

    def __enter__(self) -> EmulatorProcess:
        command = [sys.executable, "-m", "bench.emulator", "--port", str(self.port)]
        command += ["--config", json.dumps(self._config)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self._proc = subprocess.Popen(command, cwd=ROOT, env=env)
        give_up = time.monotonic() + 30
        while True:
            try:
                self._http.get("/_emulator/config").raise_for_status()
                return self
            except httpx.TransportError:
                if self._proc.poll() is not None or time.monotonic() > give_up:
                    raise RuntimeError("the emulator process did not start") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self._http.close()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def configure(self, **changes: Any) -> dict[str, Any]:
        response = self._http.post("/_emulator/config", json=changes)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        """Forget predictions and recorded requests (the config stays)."""
        self._http.post("/_emulator/reset").raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        return self._http.get("/_emulator/requests").json()["requests"]

    def predictions(self) -> list[dict[str, Any]]:
        return self._http.get("/_emulator/predictions").json()["predictions"]

    def cpu_seconds(self) -> float:
        """User + system CPU the emulator process has used so far (Linux /proc)."""
        return cpu_seconds(self.pid, children=False)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.emulator")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", default="{}", help="EmulatorConfig fields as JSON")
    args = parser.parse_args()
    serve(args.port, json.loads(args.config))


if __name__ == "__main__":
    main()
