"""The latency the SLO governor steers by, kept from the server's own request records.

Only governed tiers count (`Tier.governed`: flex waits in its lane by design). Counts are cumulative
since start; the governor differences two snapshots to judge a lookback window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from server.outcome import BucketCounts, RequestRecord
from server.tiers import TIERS

Buckets = list[tuple[float, float]]  # cumulative (upper bound, count), the last bound +Inf


class LatencyTracker:
    """Time to first token and inter-token latency of governed requests, bucketed over `bounds_s`."""

    def __init__(self, bounds_s: Sequence[float]) -> None:
        bounds = list(bounds_s) if math.isinf(bounds_s[-1]) else [*bounds_s, math.inf]
        self._ttft = BucketCounts(bounds)
        self._itl = BucketCounts(bounds)

    def record(self, record: RequestRecord) -> None:
        """Count one ended request (called by the request scope as it closes)."""
        if not TIERS[record.tier].governed:
            return
        if record.ttft_s is not None:
            self._ttft.observe(record.ttft_s)
        if record.itl is not None:
            self._itl.add(record.itl)

    def snapshot(self) -> tuple[Buckets, Buckets]:
        """Cumulative TTFT and ITL buckets so far."""
        return self._ttft.cumulative(), self._itl.cumulative()


def quantile(q: float, buckets: Buckets) -> float | None:
    """The q-quantile of cumulative buckets, interpolated as Prometheus does (None when empty)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound
