"""A Prometheus histogram fed a whole request's bucket counts at once.

prometheus_client's `Histogram` observes one value per call (a lock and a walk over the buckets each
time). Inter-token latency comes one value per streamed token, so a request counts its gaps into a
`BucketCounts` as they come and hands them over once, when it ends.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from server.outcome import BucketCounts


class BulkHistogram(Collector):
    """A labelled histogram whose series grow by whole `BucketCounts` at a time."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = list(labelnames)
        self.bounds = [*buckets, math.inf]
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}
        registry.register(self)

    def new_counts(self) -> BucketCounts:
        """Empty counts for one request."""
        return BucketCounts(self.bounds)

    def labels(self, *values: str) -> None:
        """Create a series up front, so it reads 0 before its first observation."""
        self._series.setdefault(values, ([0] * len(self.bounds), [0.0]))

    def add(self, values: Sequence[str], counts: BucketCounts) -> None:
        """Add one request's observations to the series with these label values."""
        series, total = self._series.setdefault(tuple(values), ([0] * len(self.bounds), [0.0]))
        for index, count in enumerate(counts.counts):
            if count:
                series[index] += count
        total[0] += counts.total

    def describe(self) -> Iterator[HistogramMetricFamily]:
        """The family, without samples (for the registry's name checks)."""
        yield HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """Every series, with cumulative buckets."""
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        # Scrapes render in a worker thread while the event loop may add a series: iterate over a copy.
        for values, (counts, total) in list(self._series.items()):
            running, buckets = 0, []
            for bound, count in zip(self.bounds, counts, strict=True):
                running += count
                buckets.append(("+Inf" if math.isinf(bound) else repr(float(bound)), running))
            family.add_metric(list(values), buckets, total[0])
        yield family
