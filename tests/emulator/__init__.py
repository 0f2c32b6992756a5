"""A local emulator of the Replicate HTTP API subset MusicGen Studio uses (a test instrument).

It runs meta/musicgen's request handling, lifecycle and logs faithfully, but its audio is
synthesised tones, never real music. Use `run_emulator()` in tests or `python -m tests.emulator`.
"""

from .app import create_app
from .config import DEFAULT_TOKEN, MUSICGEN_VERSION, EmulatorConfig, Fault, WebhookFault
from .server import Emulator, run_emulator
from .state import EmulatorState

__all__ = [
    "DEFAULT_TOKEN",
    "MUSICGEN_VERSION",
    "Emulator",
    "EmulatorConfig",
    "EmulatorState",
    "Fault",
    "WebhookFault",
    "create_app",
    "run_emulator",
]
