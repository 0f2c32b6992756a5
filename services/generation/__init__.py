"""One run end to end, on any engine: the policy (what may run), the runner (start, follow, file,
cancel) and the recovery (resume, orphans, import), behind `GenerationService`."""

from services.generation.policy import PreparedRun
from services.generation.service import GenerationService

__all__ = ["GenerationService", "PreparedRun"]
