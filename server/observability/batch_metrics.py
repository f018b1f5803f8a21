"""The Batch API's Prometheus metrics: batches by how they ended, lines by outcome, their energy by tier.

Labels come from fixed sets (a batch's final status, a line's outcome, the tier table), never from ids.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

FINAL_STATUSES = ("completed", "failed", "expired", "cancelled")
LINE_OUTCOMES = ("answered", "failed")


class BatchMetrics:
    """Counters this replica adds to as it creates, runs and finishes batches."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.batches_finished = Counter(
            "wattserve_batches_finished_total",
            "Batches this replica finished, by final status (failed: refused at validation).",
            ["status"],
            registry=registry,
        )
        self.lines = Counter(
            "wattserve_batch_lines_total",
            "Batch lines this replica ran to an outcome (answered, or failed with an error line).",
            ["outcome"],
            registry=registry,
        )
        self.energy = Counter(
            "wattserve_batch_energy_joules_total",
            "Energy of the batch lines this replica answered, by the tier they ran in.",
            ["tier"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "wattserve_batch_lines_in_flight", "Batch lines this replica is running now.", registry=registry
        )
        for status in FINAL_STATUSES:
            self.batches_finished.labels(status)
        for outcome in LINE_OUTCOMES:
            self.lines.labels(outcome)
