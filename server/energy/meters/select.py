"""Pick the meter for `--energy-meter auto|nvml|rapl|estimated|none`."""

from __future__ import annotations

import logging

from server.energy.meters.base import EnergyMeter, EnergyMeterError, NullEnergyMeter
from server.energy.meters.estimated import EstimatedMeter
from server.energy.meters.rapl import RaplMeter

logger = logging.getLogger(__name__)


def open_meter(kind: str, *, cuda_visible_devices: str | None, watts_per_core: float) -> EnergyMeter:
    """Open the requested meter; `auto` tries NVML, then RAPL, then the labelled estimate.

    Raises:
        EnergyMeterError: An explicitly requested meter is not available here.
    """
    if kind == "none":
        return NullEnergyMeter()
    if kind in ("nvml", "auto"):
        try:
            from server.energy.meters.nvml import NvmlMeter  # noqa: PLC0415

            return NvmlMeter(cuda_visible_devices)
        except (EnergyMeterError, ImportError) as err:
            if kind == "nvml":
                raise EnergyMeterError(str(err)) from err
            logger.info("energy meter: NVML not available (%s)", err)
    if kind in ("rapl", "auto"):
        try:
            return RaplMeter()
        except EnergyMeterError as err:
            if kind == "rapl":
                raise
            logger.info("energy meter: RAPL not available (%s)", err)
    if kind in ("estimated", "auto"):
        logger.warning(
            "energy meter: ESTIMATED from CPU time x %.1f W per busy core; figures are labelled "
            "source='estimated' and are not measurements",
            watts_per_core,
        )
        return EstimatedMeter(watts_per_core)
    raise EnergyMeterError(f"unknown energy meter {kind!r}")
