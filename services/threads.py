"""How the process's helper threads wait between two pieces of work: asleep, not spinning.

Two kinds of helper threads spin while they wait, and on a shared 2-core machine their spinning
takes the cores from the work itself: OpenBLAS's (numpy's and scipy's linear algebra, loaded with
numpy) and OpenMP's (torch's CPU kernels, loaded with the local engine).

OpenBLAS starts one helper per core when it loads and keeps it spinning for a while after each
call. The studio's own numpy work is small (tempo and key fits, audio arithmetic) and gains
nothing from a second thread; the spinning cost about half the app's CPU per take in a crowd of
Replicate takes (bench.crowd: 138 ms of CPU a take with the helper, 74 ms without). So OpenBLAS
runs on the calling thread alone (`one_blas_thread`, before numpy is first imported). torch does
its heavy lifting with its own kernels and threads, untouched by this.

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
BLAS_THREADS = "OPENBLAS_NUM_THREADS"


def one_blas_thread(env: MutableMapping[str, str] | None = None) -> bool:
    """OpenBLAS on the calling thread alone (no helper to spin), unless the operator set a
    number of their own. OpenBLAS reads it as it loads: False if it was set too late (numpy
    imported already)."""
    return _before_load(env, BLAS_THREADS, "1", "numpy", "OpenBLAS's helper threads")


def sleep_while_waiting(env: MutableMapping[str, str] | None = None) -> bool:
    """Make OpenMP's threads sleep while they wait (`OMP_WAIT_POLICY=PASSIVE`), unless the
    operator set a policy of their own. libgomp reads it once, when torch is first imported:
    False if it was set too late (torch imported already)."""
    return _before_load(env, WAIT_POLICY, "PASSIVE", "torch", "torch's threads")


def _before_load(
    env: MutableMapping[str, str] | None, name: str, value: str, module: str, threads: str
) -> bool:
    """Set `name` for a library read once as `module` is first imported; the operator's own
    setting stands (and counts as applied). False if ours came too late (`module` imported)."""
    env = os.environ if env is None else env
    if name in env:
        return True  # the operator's choice stands
    env[name] = value
    if module in sys.modules:
        log.warning("%s was imported before this was set: %s may spin idle", module, threads)
        return False
    return True
