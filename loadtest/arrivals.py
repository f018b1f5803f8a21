"""Open-loop send schedules, fixed up front from a seed: constant, Poisson and gamma arrivals.

A schedule is a sorted array of send offsets in seconds from the start of a load point. Latency is also
measured from these scheduled times, so a late client cannot hide a slow server (coordinated omission).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

Arrival = Literal["constant", "poisson", "gamma"]


def schedule(
    arrival: Arrival, rate: float, duration_s: float, seed: int, burstiness: float = 1.0
) -> np.ndarray:
    """Send offsets in [0, duration_s) at `rate` requests per second.

    Gaps are constant (1/rate), exponential (Poisson), or gamma with shape `burstiness` and mean 1/rate:
    their coefficient of variation is 1/sqrt(burstiness), so < 1 is burstier than Poisson and > 1 smoother.
    Unlike vLLM's client, the offsets are not rescaled to end exactly at duration_s: rescaling would
    change the gap distribution the statistics of a run are about.
    """
    if rate <= 0 or duration_s <= 0:
        raise ValueError(f"rate and duration must be positive, got {rate} and {duration_s}")
    if arrival == "constant":
        # Offsets as index / rate: np.arange with a float step can overshoot duration_s by rounding.
        offsets = np.arange(math.ceil(rate * duration_s)) / rate
        return offsets[offsets < duration_s]
    shape = 1.0 if arrival == "poisson" else burstiness
    if shape <= 0:
        raise ValueError(f"burstiness must be positive, got {burstiness}")
    rng = np.random.default_rng(seed)
    expected = rate * duration_s
    # Draw enough gaps to pass duration_s with overwhelming probability, then cut; draw more if not.
    offsets = np.empty(0)
    start = 0.0
    while start < duration_s:
        gaps = rng.gamma(shape, 1.0 / (rate * shape), size=int(expected + 10 * np.sqrt(expected) + 16))
        chunk = start + np.cumsum(gaps)
        offsets = np.concatenate([offsets, chunk])
        start = chunk[-1]
    # The first request goes at 0 so a point never starts with an idle gap the window would count.
    offsets = np.concatenate([[0.0], offsets])
    return offsets[offsets < duration_s]
