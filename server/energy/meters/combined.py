"""Several meters read as one, each part named: the whole node rather than only its GPUs.

On a GPU node NVML sees only the GPUs; the host's CPU packages and DRAM (RAPL), or an estimate where the
host has no counter, draw power for the same requests: vLLM's engine core and API process run there, and
busy-wait between steps. `--energy-meter nvml+rapl` (or `node`) meters both; every device keeps its part's
name (`nvml:gpu0`, `rapl:intel-rapl:0/package-0`), so the GPU-only figure stays readable beside the total.
"""

from __future__ import annotations

import contextlib

from server.energy.meters.base import EnergyMeter, EnergyMeterError


class CombinedMeter:
    """The parts' devices side by side; `source` names every part (`nvml+rapl`)."""

    def __init__(self, parts: list[EnergyMeter]) -> None:
        if len(parts) < 2:
            raise EnergyMeterError("a combined meter needs at least two parts")
        self.parts = parts
        self.source = "+".join(part.source for part in parts)
        self.devices = [f"{part.source}:{device}" for part in parts for device in part.devices]

    def read_joules(self) -> list[float]:
        """Every part's cumulative joules per device, in `devices` order."""
        readings: list[float] = []
        for part in self.parts:
            readings.extend(part.read_joules())
        return readings

    def close(self) -> None:
        """Close every part, even when one fails to close."""
        for part in self.parts:
            with contextlib.suppress(EnergyMeterError):
                part.close()


def part_sources(source: str) -> list[str]:
    """The parts a meter's `source` names (`nvml+estimated` → nvml, estimated)."""
    return source.split("+")
