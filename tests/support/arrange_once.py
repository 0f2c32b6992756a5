"""Arrange a 3-section song in its own process, to be killed mid-song by a test.

Usage: python -m tests.support.arrange_once DATA_DIR BASE_URL TOKEN
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from services.compose.arrange import Arranger
from services.generation import GenerationService
from services.library import Library
from services.settings import Settings

# The song the arrange tests make: three short sections.
SONG = [
    {"name": "intro", "prompt": "soft felt piano intro", "seconds": 3},
    {"name": "verse", "prompt": "full band verse with drums", "seconds": 4},
    {"name": "chorus", "prompt": "big chorus with brass", "seconds": 4},
]
SETTINGS = {"model_version": "stereo-large", "seed": 7}


async def main(data_dir: str, base_url: str, token: str) -> None:
    env = {"MUSICGEN_DATA_DIR": data_dir, "REPLICATE_BASE_URL": base_url}
    settings = Settings.from_env({**env, "MUSICGEN_ENGINE": "replicate"})
    library = Library(Path(data_dir))
    arranger = Arranger(GenerationService(settings, library), library, Path(data_dir))
    async for update in arranger.arrange(SONG, SETTINGS, token=token, owner=None, overlap=2):
        print(update.part, update.run.status if update.run else "-", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
