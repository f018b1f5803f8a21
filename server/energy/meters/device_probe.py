"""One engine worker's device, read on a thread of the worker: the cached reading its RPC hands back.

A worker answers RPCs between engine steps, so the answer must be cheap: NVML calls take the driver's
lock (microseconds to milliseconds) and never run in the step. The probe reads the device on its own
daemon thread and the RPC returns the latest cumulative figure.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from server.energy.meters.base import EnergyMeterError

logger = logging.getLogger(__name__)

# Listing a GPU's processes costs milliseconds on the driver's lock: check who shares it now and then.
SHARING_CHECK_EVERY = 50

NVML = "nvml"
ESTIMATED = "estimated"
UNMETERED = "unmetered"


@dataclass(frozen=True)
class DeviceReading:
    """What one worker reports of its device: plain data, so it crosses vLLM's RPC as a dict."""

    node: str  # the worker's hostname
    device: str  # NVML's UUID on a GPU, `cpu-rank<r>` for a CPU worker
    kind: str  # NVML, ESTIMATED or UNMETERED
    joules: float | None  # cumulative since the probe opened; None where the device cannot be metered
    note: str = ""  # why it is unmetered, or that other processes share the GPU

    def to_wire(self) -> dict[str, Any]:
        """The reading as the plain dict the RPC carries."""
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> DeviceReading:
        """A reading back from its dict."""
        joules = data["joules"]
        return cls(
            str(data["node"]),
            str(data["device"]),
            str(data["kind"]),
            None if joules is None else float(joules),
            str(data.get("note", "")),
        )


def sharing_note(other_processes: int) -> str:
    """How a GPU used by processes outside the engine is stated (its joules are the whole GPU's)."""
    return f"shared with {other_processes} other processes" if other_processes else ""


class DeviceProbe:
    """Reads a device every `period_s` on a daemon thread; `latest()` returns the last reading at once."""

    def __init__(
        self,
        reading: DeviceReading,
        read_j: Callable[[], float] | None = None,
        note: Callable[[], str] | None = None,
        period_s: float = 0.1,
    ) -> None:
        """Start from `reading`; with no `read_j` (an unmetered device) it stays as it is.

        Args:
            reading: The first reading (node, device, kind, note), taken by the caller.
            read_j: Cumulative joules now; may raise `EnergyMeterError`.
            note: The device's note now (who shares it), asked every `SHARING_CHECK_EVERY` reads.
            period_s: Seconds between reads.
        """
        self._latest = reading
        self._read_j = read_j
        self._note = note
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if read_j is not None:
            self._thread = threading.Thread(target=self._run, name="wattserve-device-probe", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        reads = 0
        while not self._stop.wait(self._period_s):
            latest = self._latest
            try:
                joules = self._read_j() if self._read_j is not None else latest.joules
                note = latest.note
                if self._note is not None and reads % SHARING_CHECK_EVERY == 0:
                    note = self._note()
            except EnergyMeterError as err:
                logger.warning("device %s: read failed: %s", latest.device, err)
                continue
            reads += 1
            # One assignment of a frozen record: the RPC thread sees the old reading or the new one.
            self._latest = DeviceReading(latest.node, latest.device, latest.kind, joules, note)

    def latest(self) -> DeviceReading:
        """The last reading taken (no device access here)."""
        return self._latest

    def stop(self) -> None:
        """Stop reading."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def cpu_probe(node: str, rank: int, watts_per_core: float, period_s: float) -> DeviceProbe:
    """A CPU worker's labelled estimate: its process tree's CPU time × watts per core."""
    from server.energy.meters.estimated import EstimatedMeter  # noqa: PLC0415

    meter = EstimatedMeter(watts_per_core)  # this process (the worker) and its children

    def read_j() -> float:
        return meter.read_joules()[0]

    note = f"estimated: CPU time x {watts_per_core:g} W per busy core"
    return DeviceProbe(
        DeviceReading(node, f"cpu-rank{rank}", ESTIMATED, read_j(), note), read_j, None, period_s
    )


def gpu_probe(  # noqa: PLR0913 - the CUDA device's identity, as the worker knows it
    node: str,
    *,
    uuid: str | None,
    pci_bus_id: str | None,
    cuda_visible_devices: str | None,
    local_index: int,
    engine_pids: set[int],
    period_s: float,
) -> DeviceProbe:
    """A CUDA worker's GPU through NVML, found by UUID or PCI bus id; MIG and NVML failures stated."""
    from server.energy.meters.nvml import DeviceCounter, find_worker_device  # noqa: PLC0415

    try:
        found = find_worker_device(
            uuid=uuid,
            pci_bus_id=pci_bus_id,
            cuda_visible_devices=cuda_visible_devices,
            local_index=local_index,
        )
    except (EnergyMeterError, ImportError) as err:
        return DeviceProbe(
            DeviceReading(node, uuid or pci_bus_id or f"cuda{local_index}", UNMETERED, None, str(err))
        )
    if found.handle is None:
        return DeviceProbe(DeviceReading(node, found.device, UNMETERED, None, found.note))
    try:
        counter = DeviceCounter(found.handle, engine_pids)
        note = sharing_note(counter.other_processes())
    except EnergyMeterError as err:
        return DeviceProbe(DeviceReading(node, found.device, UNMETERED, None, str(err)))
    return DeviceProbe(
        DeviceReading(node, found.device, NVML, 0.0, note),
        counter.joules,
        lambda: sharing_note(counter.other_processes()),
        period_s,
    )
