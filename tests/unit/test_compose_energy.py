"""Which meter the server uses: the engine's workers where asked and they answer, else the one opened with
the app; a swap relabels the meter's Prometheus series and fills `/v1/energy`'s per-device figures."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from server.compose_energy import OpenedMeter, engine_meter, open_server_meter
from server.energy.carbon import CarbonModel
from server.energy.meters.base import EnergyMeterError, NullEnergyMeter
from server.energy.meters.device_probe import NVML, UNMETERED, DeviceReading
from server.energy.meters.estimated import EstimatedMeter
from server.energy.meters.nvml import MIG_NOTE
from server.energy.summary import EnergySummaryExporter
from server.engine.worker_meter import WorkerEnergyMeter
from server.observability.metrics import ServerMetrics
from server.settings import ServerSettings
from tests.unit.test_worker_energy import FakeWorkers


def test_workers_open_with_the_engine_and_auto_without_gpus_is_unchanged() -> None:
    workers = open_server_meter(ServerSettings(energy_meter="workers"))
    assert (workers.meter.source, workers.try_workers) == ("none", True)
    estimated = open_server_meter(ServerSettings(energy_meter="estimated"))
    assert (estimated.meter.source, estimated.try_workers) == ("estimated", False)
    auto = open_server_meter(ServerSettings(energy_meter="auto"))  # no NVML GPU on a test machine
    assert auto.meter.source != "nvml" or auto.try_workers


def exporters(
    source: str, devices: list[str]
) -> tuple[CollectorRegistry, ServerMetrics, EnergySummaryExporter]:
    registry = CollectorRegistry()
    return (
        registry,
        ServerMetrics(registry, source, devices),
        EnergySummaryExporter(source, devices, CarbonModel()),
    )


async def test_the_workers_replace_the_meter_in_metrics_and_summary() -> None:
    registry, metrics, summary = exporters("none", [])
    fake = FakeWorkers([
        DeviceReading("node-a", "GPU-aaaa", NVML, 10.0, "shared with 2 other processes"),
        DeviceReading("node-b", "MIG-dddd", UNMETERED, None, MIG_NOTE),
    ])  # fmt: skip
    settings = ServerSettings(energy_meter="workers")
    meter = await engine_meter(
        settings, fake, OpenedMeter(NullEnergyMeter(), True), (metrics, summary), registry
    )
    assert isinstance(meter, WorkerEnergyMeter)
    fake.readings[0] = DeviceReading("node-a", "GPU-aaaa", NVML, 14.0, "shared with 2 other processes")
    assert await asyncio.to_thread(meter.read_joules) == [4.0, 0.0]

    assert registry.get_sample_value("wattserve_energy_meter_info", {"source": "nvml"}) == 1
    assert registry.get_sample_value("wattserve_energy_meter_info", {"source": "none"}) is None
    assert (
        registry.get_sample_value("wattserve_power_watts", {"device": "node-a/GPU-aaaa", "source": "nvml"})
        == 0
    )
    energy = "wattserve_device_energy_joules_total"
    assert registry.get_sample_value(energy, {"node": "node-a", "device": "GPU-aaaa"}) == 4.0
    assert registry.get_sample_value(energy, {"node": "node-b", "device": "MIG-dddd"}) is None  # not booked

    document = summary.summary()
    assert document.source == "nvml"
    gpu, mig = document.devices
    assert (gpu.name, gpu.node, gpu.device, gpu.kind, gpu.joules) == (
        "node-a/GPU-aaaa",
        "node-a",
        "GPU-aaaa",
        NVML,
        4.0,
    )
    assert gpu.note == "shared with 2 other processes"
    assert (mig.kind, mig.joules, mig.note) == (UNMETERED, None, MIG_NOTE)


async def test_workers_that_cannot_meter_refuse_startup_only_when_asked_for() -> None:
    registry, metrics, summary = exporters("estimated", ["cpu"])
    failing = FakeWorkers([])
    failing.fail = True
    with pytest.raises(EnergyMeterError, match="cannot be metered"):
        await engine_meter(
            ServerSettings(energy_meter="workers"),
            failing,
            OpenedMeter(NullEnergyMeter(), True),
            (metrics, summary),
            registry,
        )
    opened = OpenedMeter(EstimatedMeter(), try_workers=True)  # as auto would hold NVML here
    kept = await engine_meter(
        ServerSettings(energy_meter="auto"), failing, opened, (metrics, summary), registry
    )
    assert kept is opened.meter
    assert summary.summary().source == "estimated"
    assert registry.get_sample_value("wattserve_energy_meter_info", {"source": "estimated"}) == 1


async def test_a_meter_not_to_be_replaced_is_left_without_asking_the_engine() -> None:
    registry, metrics, summary = exporters("estimated", ["cpu"])
    fake = FakeWorkers([DeviceReading("node-a", "GPU-aaaa", NVML, 10.0)])
    opened = OpenedMeter(EstimatedMeter(), try_workers=False)
    assert await engine_meter(ServerSettings(), fake, opened, (metrics, summary), registry) is opened.meter
    assert fake.calls == []
