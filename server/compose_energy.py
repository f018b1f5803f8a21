"""The composition root's energy half: which meter, and the books and sampler it feeds.

The meter is opened with the app; where the engine's own workers can meter their devices (any node, GPUs
named by UUID, MIG instances stated), their meter replaces it once the engine runs:
- `--energy-meter workers`: the workers or nothing (startup fails, saying why);
- `auto` or `nvml` where this process found NVML GPUs: the workers where they answer, else NVML here;
- everything else (RAPL, the estimate, combined meters, none) as opened: on a machine without GPUs,
  `auto` meters as it always did.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from server.energy.books import EnergyBooks, EnergyExporter
from server.energy.carbon import CarbonModel
from server.energy.floor import IdleFloor
from server.energy.ledger import EnergyLedger
from server.energy.meters.base import EnergyMeter, EnergyMeterError, NullEnergyMeter
from server.energy.meters.select import open_meter
from server.energy.sampler import EnergySampler, NullSampler
from server.energy.summary import EnergySummaryExporter
from server.engine.worker_meter import WorkerEnergyMeter, WorkerRpc
from server.observability.device_metrics import DeviceEnergyCollector
from server.observability.metrics import ServerMetrics
from server.settings import ServerSettings

logger = logging.getLogger(__name__)

WORKERS = "workers"


@dataclass(frozen=True)
class OpenedMeter:
    """The meter opened with the app, and whether the engine's workers should replace it."""

    meter: EnergyMeter
    try_workers: bool


def open_server_meter(settings: ServerSettings) -> OpenedMeter:
    """The meter `settings.energy_meter` names (a stand-in for `workers`, until the engine runs)."""
    if settings.energy_meter == WORKERS:
        return OpenedMeter(NullEnergyMeter(), try_workers=True)
    meter = open_meter(
        settings.energy_meter,
        cuda_visible_devices=settings.cuda_visible_devices,
        watts_per_core=settings.estimated_watts_per_core,
    )
    return OpenedMeter(meter, settings.energy_meter in ("auto", "nvml") and meter.source == "nvml")


async def engine_meter(
    settings: ServerSettings,
    engine: WorkerRpc,
    opened: OpenedMeter,
    exporters: tuple[ServerMetrics, EnergySummaryExporter],
    registry: CollectorRegistry,
) -> EnergyMeter:
    """The engine's workers as the meter where `opened` says to try them and they answer; else `opened`'s.

    Raises:
        EnergyMeterError: `--energy-meter workers`, and the workers cannot be metered.
    """
    if not opened.try_workers:
        return opened.meter
    try:
        workers = await WorkerEnergyMeter.open(
            engine,
            watts_per_core=settings.estimated_watts_per_core,
            period_s=settings.energy_sample_period_s,
        )
    except EnergyMeterError as err:
        if settings.energy_meter == WORKERS:
            raise
        logger.warning(
            "energy meter: the engine's workers cannot meter (%s); metering from this process", err
        )
        return opened.meter
    opened.meter.close()
    metrics, summary = exporters
    metrics.use_meter(workers.source, workers.devices)
    summary.use_meter(workers.source, workers.devices, workers.device_readings)
    DeviceEnergyCollector(registry, workers.device_readings)
    for reading in workers.device_readings():
        if reading.note:
            logger.warning("energy meter: %s/%s: %s", reading.node, reading.device, reading.note)
    return workers


def start_books(
    settings: ServerSettings,
    meter: EnergyMeter,
    carbon: CarbonModel,
    exporters: list[EnergyExporter],
) -> tuple[EnergySampler | NullSampler, EnergyBooks]:
    """The energy books and the sampler that feeds them, started (on the event loop they hand readings to)."""
    ledger = EnergyLedger(
        settings.prefill_energy_weight,
        settings.decode_energy_weight,
        IdleFloor(min_idle_s=settings.idle_floor_min_seconds),
        carbon.grams_per_joule_at,
    )
    metering = meter.source != "none"
    loop = asyncio.get_running_loop()
    sampler = EnergySampler(meter, loop, settings.energy_sample_period_s) if metering else NullSampler()
    books = EnergyBooks(ledger, meter.source, meter.devices, exporters, sampler)
    sampler.start(books.on_reading)
    if metering:
        logger.info("energy meter: %s (%s)", meter.source, ", ".join(meter.devices))
    return sampler, books
