"""What a Replicate run costs: the estimate shown before Generate, the price of a finished run,
and the deadline (`Cancel-After`) every create carries so that a run nobody follows stops.

Replicate bills a public model's runs by the second of `metrics.predict_time` (setup, queue and
idle time are free) at its hardware's rate; meta/musicgen runs on one Nvidia A100 (40GB).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

# Replicate's published rate for "Nvidia A100 (40GB) GPU": $0.001150/sec ($4.14/hr),
# replicate.com/docs/billing. Override with MUSICGEN_GPU_PRICE_PER_SECOND.
DEFAULT_GPU_PRICE_PER_SECOND = 0.00115

# Cancel-After = queue allowance + a budget per second of audio asked for (minimum 5 s, the
# API's). Generous on purpose: a run that misses it is stopped and its music lost. The queue
# allowance covers a shared queue, a cold boot and loading the model; 10 s of GPU per second
# of audio is several times what the large models need on an A100 (see DOCUMENTED_RATES).
CANCEL_AFTER_QUEUE_S = 900
CANCEL_AFTER_PER_AUDIO_SECOND = 10
CANCEL_AFTER_MIN_S = 5

# Seconds of A100 work per run (fixed part) and per second of audio, used until the library
# has its own measurements of a model. Figures assumed from MusicGen's 50 autoregressive steps
# per second of audio and the size of each model (3.3B parameters for the large ones, melody
# conditioning and stereo's doubled codebooks adding a little); no published per-model figure
# for meta/musicgen was found. The library's own predict times replace them after one run.
DOCUMENTED_RATES: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "stereo-melody-large": (5.0, 1.6),
        "stereo-large": (5.0, 1.5),
        "melody-large": (5.0, 1.3),
        "large": (5.0, 1.2),
    }
)
FALLBACK_RATE = (5.0, 1.6)

HISTORY = "history"
DOCUMENTED = "documented"
FREE = "local"


def cancel_after_seconds(duration: float) -> int:
    """The deadline, in seconds after the create, of a run asking for `duration` s of audio."""
    budget = CANCEL_AFTER_QUEUE_S + CANCEL_AFTER_PER_AUDIO_SECOND * max(0.0, float(duration))
    return max(CANCEL_AFTER_MIN_S, round(budget))


def run_cost(predict_time: float | None, price_per_second: float) -> float | None:
    """What a run's GPU time cost, in dollars (None while unknown)."""
    return None if predict_time is None else round(predict_time * price_per_second, 6)


@dataclass(frozen=True)
class Estimate:
    """The expected GPU seconds and price of one run, and where the figure comes from."""

    gpu_seconds: float
    price: float
    basis: str  # HISTORY (the library's own runs), DOCUMENTED, or FREE (this machine)
    samples: int = 0

    @property
    def text(self) -> str:
        """One line for the page."""
        if self.basis == FREE:
            return "Runs on this machine: no GPU bill."
        source = (
            f"median of your {self.samples} earlier run(s) of this model"
            if self.basis == HISTORY
            else "published figures for an A100, until your own runs are measured"
        )
        return (
            f"Estimated GPU time ≈ {self.gpu_seconds:.0f} s, ≈ ${self.price:.3f} on Replicate "
            f"({source})."
        )


def estimate(
    model_version: str,
    duration: float,
    price_per_second: float,
    seconds_per_audio_second: Sequence[float] = (),
) -> Estimate:
    """The estimate for `duration` s of `model_version`, from earlier runs' predict time per
    second of audio when there are any, else from DOCUMENTED_RATES."""
    samples = [s for s in seconds_per_audio_second if s > 0]
    if samples:
        seconds = statistics.median(samples) * duration
        basis = HISTORY
    else:
        fixed, per_second = DOCUMENTED_RATES.get(model_version, FALLBACK_RATE)
        seconds = fixed + per_second * duration
        basis = DOCUMENTED
    return Estimate(seconds, seconds * price_per_second, basis, len(samples))


def free_estimate() -> Estimate:
    """A run on this machine: nothing to pay."""
    return Estimate(0.0, 0.0, FREE)
