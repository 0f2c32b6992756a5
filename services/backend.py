"""The interface between the generation service and whatever runs the model.

Replicate's HTTP API is the first backend; a local engine or a Cog container can follow
without touching the UI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from services.events import RunUpdate


class Backend(Protocol):
    async def upload(self, path: Path) -> str:
        """Make a local audio file reachable by the model; returns the URI to pass as input."""

    async def create(self, input: dict[str, Any]) -> dict[str, Any]:
        """Start a run; returns the prediction object (possibly already finished)."""

    async def get(self, prediction_id: str) -> dict[str, Any]: ...

    async def cancel(self, prediction_id: str) -> dict[str, Any]: ...

    def follow(self, prediction: dict[str, Any]) -> AsyncIterator[RunUpdate]:
        """Yield an update for every change until the run ends; the last one is terminal."""

    async def find_created(self, input: dict[str, Any], since: datetime) -> dict[str, Any] | None:
        """The run made with `input` at or after `since`, for a create whose answer was lost."""

    async def download(self, url: str, dest: Path) -> Path:
        """Fetch an output (https or data: URL) to `dest`."""

    async def aclose(self) -> None: ...
