"""How a request ended and what it measured: the record the serving layer emits and exporters consume."""

from __future__ import annotations

import bisect
import enum
from collections.abc import Sequence
from dataclasses import dataclass


class Status(str, enum.Enum):
    """How a request ended."""

    OK = "ok"
    ABORTED = "aborted"
    ERROR = "error"


class BucketCounts:
    """Observations counted per bucket (upper bounds ascending, the last +Inf) and their sum.

    A request counts its inter-token gaps here as they come (one bisect each) and hands the counts over
    once, when it ends: cheaper than observing a Prometheus histogram per streamed token.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one value (upper bounds are inclusive, as in Prometheus)."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def add(self, other: BucketCounts) -> None:
        """Add counts taken over the same bounds."""
        for index, count in enumerate(other.counts):
            if count:
                self.counts[index] += count
        self.total += other.total

    def cumulative(self) -> list[tuple[float, float]]:
        """`(upper bound, observations at or below it)` for every bucket, as Prometheus exposes them."""
        running, buckets = 0, []
        for bound, count in zip(self.bounds, self.counts, strict=True):
            running += count
            buckets.append((bound, float(running)))
        return buckets


@dataclass
class RequestRecord:
    """One ended request's timing and tokens (collected by the request scope, read by exporters).

    A request refused or abandoned before the engine saw it has `reached_engine` false and only its
    status counts.
    """

    adapter: str
    tier: str
    status: Status
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None
    e2e_s: float = 0.0
    queue_s: float | None = None
    itl: BucketCounts | None = None
    reached_engine: bool = True
