"""Run the emulator by hand: python -m tests.emulator --port 8765."""

from __future__ import annotations

import argparse
import time

from .config import DEFAULT_TOKEN, EmulatorConfig
from .server import run_emulator


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.emulator",
        description="Local Replicate API emulator for MusicGen Studio "
        "(synthetic tones, not music).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--token", action="append", help=f"a valid API token (default {DEFAULT_TOKEN})"
    )
    parser.add_argument("--queue-seconds", type=float, default=2.0, help="time spent `starting`")
    parser.add_argument("--run-seconds", type=float, default=None, help="fixed processing time")
    parser.add_argument(
        "--tokens-per-second",
        type=float,
        default=50.0,
        help="generation speed when no --run-seconds",
    )
    parser.add_argument("--output-ttl", type=float, default=3600.0, help="seconds outputs are kept")
    parser.add_argument("--no-stream", action="store_true", help="no urls.stream / SSE")
    args = parser.parse_args()
    config = EmulatorConfig(
        tokens=args.token or [DEFAULT_TOKEN],
        queue_seconds=args.queue_seconds,
        run_seconds=args.run_seconds,
        tokens_per_second=args.tokens_per_second,
        output_ttl_seconds=args.output_ttl,
        stream=not args.no_stream,
    )
    with run_emulator(config, port=args.port, host=args.host, wait_shutdown=True) as emulator:
        print(f"Replicate API emulator listening on {emulator.base_url}", flush=True)
        print(
            "This is a local test emulator: its 'music' is synthesised tones, not real MusicGen "
            "output.",
            flush=True,
        )
        print(
            f"Try: REPLICATE_BASE_URL={emulator.base_url} REPLICATE_API_TOKEN={config.tokens[0]} "
            "python app.py   (Ctrl+C to stop)",
            flush=True,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
