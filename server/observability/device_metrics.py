"""Each engine worker's device as its own Prometheus counter, read from the workers' meter at scrape time.

The readings are cumulative already (the worker meter counts since it opened), so they are exported as
they are, not incremented: a custom collector, like prometheus_client's process collector. Label values
are bounded: the engine's nodes and devices, fixed once it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from server.energy.meters.device_probe import DeviceReading

DEVICE_ENERGY = "wattserve_device_energy_joules"


class DeviceEnergyCollector(Collector):
    """`wattserve_device_energy_joules_total{node, device}`: each metered device's joules since start."""

    def __init__(self, registry: CollectorRegistry, readings: Callable[[], Sequence[DeviceReading]]) -> None:
        self._readings = readings
        registry.register(self)

    def collect(self) -> Iterator[CounterMetricFamily]:
        """One sample per metered device; a device that cannot be metered (MIG) has none (see /v1/energy)."""
        family = CounterMetricFamily(
            DEVICE_ENERGY,
            "Energy of each engine worker's device since start (GPUs shared with other processes count "
            "whole; the kind and notes are in /v1/energy).",
            labels=["node", "device"],
        )
        for reading in self._readings():
            if reading.joules is not None:
                family.add_metric([reading.node, reading.device], reading.joules)
        yield family
