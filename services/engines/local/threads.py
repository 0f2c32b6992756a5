"""How torch's CPU threads wait between two pieces of work: asleep, not spinning.

torch's CPU kernels run on OpenMP (GNU libgomp in the PyPI wheels). By default libgomp's
threads spin for a while (GOMP_SPINCOUNT 300,000) before they sleep: the helper thread between
two parallel regions, and the calling thread at the end of each region until its helper has
arrived. When other programs hold the cores (a shared 2-core machine, the app's own event loop
streaming a page, a browser on the same box), the helper is often off its core and the calling
thread spins the whole time, so a take's CPU time grows with its wall time, doing nothing.
Measured in the app on the tiny checkpoint under a load of about 8 (bench.local_batching's page
rows): a 2 s take through `/generate` cost 4.0-6.9 s of the process's CPU spinning, 0.65 s
sleeping instead, and took 1.1-1.3 s instead of 3.5-11.7 s; musicgen-small's architecture,
in process, cost the same CPU either way (8.2-8.7 s a take), at no measured loss of speed.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

WAIT_POLICY = "OMP_WAIT_POLICY"


def sleep_while_waiting(env: MutableMapping[str, str] | None = None) -> bool:
    """Make OpenMP's threads sleep while they wait (`OMP_WAIT_POLICY=PASSIVE`), unless the
    operator set a policy of their own. libgomp reads it once, when torch is first imported:
    True if it will apply (torch not imported yet)."""
    env = os.environ if env is None else env
    if WAIT_POLICY in env:
        return True  # the operator's choice stands
    env[WAIT_POLICY] = "PASSIVE"
    if "torch" in sys.modules:
        log.warning("torch was imported before the local engine: its threads may spin idle")
        return False
    return True
