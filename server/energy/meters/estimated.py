"""An energy estimate from the serving processes' CPU time: for machines with neither NVML nor RAPL.

Always labelled `source="estimated"`: it is a model (CPU-seconds × configured watts per busy core), not a
measurement.
"""

from __future__ import annotations

import os
import time

import psutil

from server.energy.meters.base import EnergyMeterError

PROCESS_LIST_TTL_S = 5.0


class EstimatedMeter:
    """Joules = CPU seconds of this process and its children (vLLM's engine) × `watts_per_core`."""

    source = "estimated"

    def __init__(self, watts_per_core: float = 15.0, pid: int | None = None) -> None:
        self._watts = watts_per_core
        self._root = psutil.Process(pid or os.getpid())
        self._processes: list[psutil.Process] = []
        self._listed_at = float("-inf")
        self._seen: dict[int, float] = {}
        self._total_cpu_s = 0.0
        self.devices = ["cpu"]
        self.read_joules()

    def _cpu_seconds(self) -> dict[int, float]:
        # Listing the process tree scans /proc; the engine's processes rarely change, so list them
        # every few seconds and read only their CPU times in between.
        if time.monotonic() - self._listed_at > PROCESS_LIST_TTL_S:
            self._processes = [self._root, *self._root.children(recursive=True)]
            self._listed_at = time.monotonic()
        seconds = {}
        for process in self._processes:
            try:
                times = process.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            seconds[process.pid] = times.user + times.system
        return seconds

    def read_joules(self) -> list[float]:
        """Estimated cumulative joules since the meter was opened."""
        try:
            now = self._cpu_seconds()
        except psutil.Error as err:
            raise EnergyMeterError(f"cannot read process CPU times: {err}") from err
        # Processes that exit keep what they used; only growth is counted, so the total never decreases.
        for pid, cpu_s in now.items():
            self._total_cpu_s += max(0.0, cpu_s - self._seen.get(pid, 0.0))
            self._seen[pid] = max(cpu_s, self._seen.get(pid, 0.0))
        return [self._total_cpu_s * self._watts]

    def close(self) -> None:
        """Nothing to release."""
