"""Extend a library entry in its own process, to be killed mid-chain by a test.

Usage: python -m tests.support.extend_once DATA_DIR BASE_URL TOKEN RUN_ID SECONDS
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from services.compose.extend import Extender
from services.generation import GenerationService
from services.library import Library
from services.settings import Settings


async def main(data_dir: str, base_url: str, token: str, run_id: str, seconds: str) -> None:
    settings = Settings.from_env(
        {
            "MUSICGEN_DATA_DIR": data_dir,
            "REPLICATE_BASE_URL": base_url,
            "MUSICGEN_ENGINE": "replicate",
        }
    )
    library = Library(Path(data_dir))
    extender = Extender(GenerationService(settings, library), library, Path(data_dir))
    async for update in extender.extend(run_id, float(seconds), token=token, owner=None, overlap=4):
        print(update.part, update.run.status if update.run else "-", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
