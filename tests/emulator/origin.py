"""The origin written into URLs in the emulator's answers."""

from __future__ import annotations

from starlette.requests import Request

from .config import EmulatorConfig


def base_of(request: Request, config: EmulatorConfig) -> str:
    """The configured public origin, or the one the client used."""
    if config.public_base_url:
        return config.public_base_url.rstrip("/")
    return str(request.base_url).rstrip("/")
