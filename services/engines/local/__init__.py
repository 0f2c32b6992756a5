"""The local engine: Hugging Face `transformers` MusicGen running in this process.

Importing this package imports neither torch nor transformers; they load with the first run.
"""

from services.engines.local.config import LocalConfig, local_engine_available
from services.engines.local.engine import LocalEngine

__all__ = ["LocalConfig", "LocalEngine", "local_engine_available"]
