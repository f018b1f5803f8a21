"""Pick the meter for `--energy-meter`: auto, none, node, or one part or several joined by `+`.

Parts: `nvml` (the GPUs the engine sees), `rapl` (CPU packages and DRAM), `estimated` (the serving
processes' CPU time × watts per core; labelled, not a measurement).
"""

from __future__ import annotations

import logging

from server.energy.meters.base import EnergyMeter, EnergyMeterError, NullEnergyMeter
from server.energy.meters.combined import CombinedMeter
from server.energy.meters.estimated import EstimatedMeter
from server.energy.meters.rapl import RaplMeter

logger = logging.getLogger(__name__)

PARTS = ("nvml", "rapl", "estimated")
KINDS_HELP = "auto, none, node, workers, or nvml, rapl, estimated joined by + (nvml+rapl)"


def check_kind(kind: str) -> str:
    """`kind` if it names a meter, else ValueError saying what does."""
    if kind in ("auto", "none", "node", "workers"):  # workers: opened once the engine runs (compose_energy)
        return kind
    parts = kind.split("+")
    if any(part not in PARTS for part in parts) or len(set(parts)) != len(parts):
        raise ValueError(f"unknown energy meter {kind!r}: use {KINDS_HELP}")
    return kind


def open_meter(kind: str, *, cuda_visible_devices: str | None, watts_per_core: float) -> EnergyMeter:
    """Open the requested meter.

    `auto` takes the first of NVML, RAPL and the estimate that works here; `node` takes NVML where there
    is a GPU and, for the host, RAPL or else the estimate; named parts must all open.

    Raises:
        EnergyMeterError: An explicitly requested part is not available here.
    """
    if kind == "none":
        return NullEnergyMeter()
    if kind == "auto":
        meter = _first(["nvml", "rapl"], cuda_visible_devices, watts_per_core)
        return meter or _open("estimated", cuda_visible_devices, watts_per_core)
    if kind == "node":
        gpus = _first(["nvml"], cuda_visible_devices, watts_per_core)
        host = _first(["rapl"], cuda_visible_devices, watts_per_core) or _open(
            "estimated", cuda_visible_devices, watts_per_core
        )
        return CombinedMeter([gpus, host]) if gpus is not None else host
    try:
        names = check_kind(kind).split("+")
    except ValueError as err:
        raise EnergyMeterError(str(err)) from err
    parts = [_open(part, cuda_visible_devices, watts_per_core) for part in names]
    return parts[0] if len(parts) == 1 else CombinedMeter(parts)


def _first(names: list[str], cuda_visible_devices: str | None, watts_per_core: float) -> EnergyMeter | None:
    for name in names:
        try:
            return _open(name, cuda_visible_devices, watts_per_core)
        except EnergyMeterError as err:
            logger.info("energy meter: %s not available (%s)", name, err)
    return None


def _open(part: str, cuda_visible_devices: str | None, watts_per_core: float) -> EnergyMeter:
    if part == "nvml":
        try:
            from server.energy.meters.nvml import NvmlMeter  # noqa: PLC0415 - needs the GPU extra

            return NvmlMeter(cuda_visible_devices)
        except ImportError as err:
            raise EnergyMeterError(str(err)) from err
    if part == "rapl":
        return RaplMeter()
    if part == "estimated":
        logger.warning(
            "energy meter: ESTIMATED from CPU time x %.1f W per busy core; figures are labelled "
            "source='estimated' and are not measurements",
            watts_per_core,
        )
        return EstimatedMeter(watts_per_core)
    raise EnergyMeterError(f"unknown energy meter {part!r}: use {KINDS_HELP}")
