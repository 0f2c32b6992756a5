"""Run one generation in its own process, to be killed mid-run by a test.

Usage: python -m tests.support.generate_once DATA_DIR BASE_URL TOKEN PROMPT DURATION [MELODY]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from services.generation import GenerationService
from services.library import Library
from services.musicgen import GenerationRequest
from services.settings import Settings


async def main(
    data_dir: str, base_url: str, token: str, prompt: str, duration: str, melody: str | None = None
) -> None:
    settings = Settings.from_env({"MUSICGEN_DATA_DIR": data_dir, "REPLICATE_BASE_URL": base_url})
    service = GenerationService(settings, Library(Path(data_dir)))
    request = GenerationRequest(
        prompt=prompt,
        duration=int(duration),
        input_audio=melody,
        model_version="stereo-melody-large",
    )
    async for update in service.generate(request, token=token, owner=None):
        print(update.status, update.prediction_id, flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
