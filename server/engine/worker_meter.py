"""The engine's workers as the server's energy meter: each worker's device reading, gathered by RPC.

Each vLLM worker reads the device it runs on (`worker_energy`), so GPUs on other nodes, GPUs named by
UUID and MIG instances are metered (or stated unmeterable) where they are. The meter satisfies the
`EnergyMeter` protocol: devices are `<node>/<device>`, joules count from the meter's opening.

The sampler reads meters on its own thread, while `collective_rpc` is a coroutine of the event loop:
`read_joules` hands the call to the loop and waits on this thread, so the loop only awaits the RPC.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any, Protocol

from server.energy.meters.base import EnergyMeterError
from server.energy.meters.device_probe import ESTIMATED, NVML, DeviceReading
from server.engine.worker_energy import OPEN_RPC, PIDS_RPC, READ_RPC

# An RPC waits for the engine's current step to end; a step longer than this is a stuck engine.
RPC_TIMEOUT_S = 5.0


class WorkerRpc(Protocol):
    """What the meter needs of the engine."""

    async def collective_rpc(
        self, method: str, args: tuple[Any, ...] = (), timeout_s: float | None = None
    ) -> list[Any]:
        """Call a worker-extension method in every worker; one answer per worker."""
        ...


class WorkerEnergyMeter:
    """Cumulative joules per worker device since opening; `device_readings` adds kind and note."""

    def __init__(
        self,
        engine: WorkerRpc,
        loop: asyncio.AbstractEventLoop,
        first: Sequence[DeviceReading],
        timeout_s: float = RPC_TIMEOUT_S,
    ) -> None:
        """Count from the workers' first readings (from `open`).

        Raises:
            EnergyMeterError: No worker's device can be metered.
        """
        self._engine = engine
        self._loop = loop
        self._timeout_s = timeout_s
        self._start_j: dict[tuple[str, str], float | None] = {}
        for reading in first:
            # Two workers on one GPU would count it twice: the first to report it stands for both.
            self._start_j.setdefault((reading.node, reading.device), reading.joules)
        self._keys = list(self._start_j)
        kinds = {reading.kind for reading in first}
        if not kinds & {NVML, ESTIMATED}:
            notes = "; ".join(f"{r.node}/{r.device}: {r.note}" for r in first) or "no workers answered"
            raise EnergyMeterError(f"no engine worker's device can be metered ({notes})")
        self.source = ESTIMATED if ESTIMATED in kinds else NVML  # any estimate makes the total one
        self.devices = [f"{node}/{device}" for node, device in self._keys]
        self._readings: tuple[DeviceReading, ...] = ()
        self._update(first)

    @classmethod
    async def open(
        cls, engine: WorkerRpc, *, watts_per_core: float, period_s: float, timeout_s: float = RPC_TIMEOUT_S
    ) -> WorkerEnergyMeter:
        """Have every worker start reading its device, on the event loop the engine runs on.

        Raises:
            EnergyMeterError: The workers lack the extension (RPC failed) or none can be metered.
        """
        try:
            processes = await engine.collective_rpc(PIDS_RPC, timeout_s=timeout_s)
            engine_pids = sorted({os.getpid(), *(pid for worker in processes for pid in worker["pids"])})
            # vLLM's data-parallel clients answer a collective RPC with the first engine's workers only:
            # the others' devices would go unmetered, unseen.
            if any(worker["data_parallel_size"] > 1 for worker in processes):
                raise EnergyMeterError(
                    "a data-parallel engine: vLLM answers collective_rpc for its first engine only"
                )
            replies = await engine.collective_rpc(
                OPEN_RPC, args=(engine_pids, watts_per_core, period_s), timeout_s=timeout_s
            )
        except EnergyMeterError:
            raise
        except Exception as err:  # vLLM raises plain exceptions for a failed RPC
            raise EnergyMeterError(f"engine workers cannot be metered: {err}") from err
        first = [DeviceReading.from_wire(reply) for reply in replies]
        return cls(engine, asyncio.get_running_loop(), first, timeout_s)

    def _gather(self) -> list[DeviceReading]:
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:  # the loop would wait on itself
            raise EnergyMeterError("the worker meter is read off the event loop only")
        rpc = self._engine.collective_rpc(READ_RPC, timeout_s=self._timeout_s)
        try:
            future = asyncio.run_coroutine_threadsafe(rpc, self._loop)
        except RuntimeError as err:  # the loop has closed
            rpc.close()
            raise EnergyMeterError(f"engine workers unreachable: {err}") from err
        try:
            replies = future.result(timeout=self._timeout_s)
        except TimeoutError as err:
            future.cancel()
            raise EnergyMeterError(f"engine workers gave no reading within {self._timeout_s} s") from err
        except Exception as err:  # vLLM raises plain exceptions for a failed RPC
            raise EnergyMeterError(f"engine worker reading failed: {err}") from err
        return [DeviceReading.from_wire(reply) for reply in replies]

    def _update(self, readings: Sequence[DeviceReading]) -> None:
        previous = {(r.node, r.device): r for r in self._readings}
        latest = {(r.node, r.device): r for r in reversed(readings)}  # the first of duplicates wins
        updated = []
        for key in self._keys:
            reading, before, start = latest.get(key), previous.get(key), self._start_j[key]
            if reading is None:  # this worker did not answer: keep what it said last
                if before is not None:
                    updated.append(before)
                continue
            joules = None
            if reading.joules is not None and start is not None:
                floor = before.joules if before is not None and before.joules is not None else 0.0
                joules = max(reading.joules - start, floor)  # never decreasing
            updated.append(DeviceReading(reading.node, reading.device, reading.kind, joules, reading.note))
        self._readings = tuple(updated)  # one assignment: readers on other threads see old or new

    def read_joules(self) -> list[float]:
        """Joules per device since opening (0 for a device that cannot be metered); blocks this thread.

        Raises:
            EnergyMeterError: The RPC failed or timed out, or this is the event loop's thread.
        """
        self._update(self._gather())
        by_key = {(r.node, r.device): r.joules for r in self._readings}
        return [by_key.get(key) or 0.0 for key in self._keys]

    def device_readings(self) -> tuple[DeviceReading, ...]:
        """The last reading of each device: joules since opening (None where unmetered), kind and note."""
        return self._readings

    def close(self) -> None:
        """Nothing to release here: the workers' probe threads end with the workers."""
