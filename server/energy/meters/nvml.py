"""NVIDIA GPUs through NVML (`nvidia-ml-py`): the only module that imports pynvml.

Uses the total-energy counter (mJ, Volta and newer); on GPUs without it, integrates the instant power
field. NVML errors become `EnergyMeterError`. Devices are found by UUID or PCI bus id wherever CUDA names
them so: NVML numbers GPUs in its own (PCI) order, which CUDA's integers need not follow.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from server.energy.meters.base import EnergyMeterError

# MIG instances share their parent GPU's energy counter and NVML has none per instance: booking the
# parent's joules to one instance would charge it for its neighbours' work.
MIG_NOTE = "mig: no per-instance energy counter"


@contextlib.contextmanager
def _nvml_errors(what: str) -> Iterator[None]:
    import pynvml  # noqa: PLC0415

    try:
        yield
    except pynvml.NVMLError as err:
        raise EnergyMeterError(f"NVML {what}: {err}") from err


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value  # older bindings answer bytes


def visible_devices(nvml: Any, cuda_visible_devices: str | None) -> list[tuple[str, Any]]:
    """(name, NVML handle) of each GPU the engine sees, in CUDA_VISIBLE_DEVICES's order (else all).

    Integers are taken as NVML indices (as CUDA numbers them with CUDA_DEVICE_ORDER=PCI_BUS_ID);
    `GPU-<uuid>` entries, or unique prefixes of one as CUDA accepts them, are found by UUID.

    Raises:
        EnergyMeterError: The list names MIG instances, which this process cannot meter.
    """
    count = nvml.nvmlDeviceGetCount()
    if not cuda_visible_devices:
        return [(f"gpu{i}", nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
    entries = [part.strip() for part in cuda_visible_devices.split(",") if part.strip()]
    mig = [entry for entry in entries if entry.startswith("MIG-")]
    if mig:
        raise EnergyMeterError(
            f"CUDA_VISIBLE_DEVICES names MIG instances ({', '.join(mig)}): NVML has no per-instance "
            "energy counter and the parent GPU's would book its other instances' work here; use "
            "--energy-meter workers to have each instance reported as unmetered, or estimated/none"
        )
    uuids: dict[str, int] = {}
    if not all(entry.isdigit() for entry in entries):
        uuids = {_text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))): i for i in range(count)}
    found = []
    for entry in entries:
        if entry.isdigit():
            if int(entry) < count:
                found.append((f"gpu{entry}", nvml.nvmlDeviceGetHandleByIndex(int(entry))))
            continue
        matches = [(uuid, i) for uuid, i in uuids.items() if uuid.startswith(entry)]
        if len(matches) == 1:
            uuid, index = matches[0]
            found.append((uuid, nvml.nvmlDeviceGetHandleByIndex(index)))
    return found


class NvmlMeter:
    """Cumulative joules per visible GPU."""

    source = "nvml"

    def __init__(self, cuda_visible_devices: str | None = None, *, use_energy_counter: bool = True) -> None:
        """Open NVML; `use_energy_counter=False` forces power integration (to check that path on any GPU)."""
        import pynvml  # noqa: PLC0415

        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as err:  # no driver, no GPU
            raise EnergyMeterError(f"NVML unavailable: {err}") from err
        with _nvml_errors("device lookup"):
            named = visible_devices(pynvml, cuda_visible_devices)
            self._handles = [handle for _, handle in named]
            self.devices = [name for name, _ in named]
        if not self._handles:
            raise EnergyMeterError(
                f"NVML found no visible GPU (CUDA_VISIBLE_DEVICES={cuda_visible_devices!r})"
            )
        self._start_mj: list[float | None] = []
        self._integrated_j = [0.0] * len(self._handles)
        self._last_power: list[tuple[float, float] | None] = [None] * len(self._handles)
        for handle in self._handles:
            try:
                start_mj = (
                    float(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)) if use_energy_counter else None
                )
            except pynvml.NVMLError_NotSupported:
                start_mj = None
            self._start_mj.append(start_mj)

    def _instant_power_w(self, handle: object) -> float:
        field = self._nvml.nvmlDeviceGetFieldValues(handle, [self._nvml.NVML_FI_DEV_POWER_INSTANT])[0]
        if field.nvmlReturn != self._nvml.NVML_SUCCESS:
            return self._nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        return field.value.uiVal / 1000.0

    def read_joules(self) -> list[float]:
        """Counter joules since opening; power-integrated joules where the counter is unsupported."""
        readings = []
        with _nvml_errors("read"):
            for index, handle in enumerate(self._handles):
                start = self._start_mj[index]
                if start is not None:
                    readings.append((self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle) - start) / 1000.0)
                    continue
                now, watts = time.monotonic(), self._instant_power_w(handle)
                last = self._last_power[index]
                if last is not None:  # trapezoid between readings
                    self._integrated_j[index] += (now - last[0]) * (watts + last[1]) / 2
                self._last_power[index] = (now, watts)
                readings.append(self._integrated_j[index])
        return readings

    def power_w(self) -> list[float]:
        """Instant power per GPU."""
        with _nvml_errors("power"):
            return [self._instant_power_w(handle) for handle in self._handles]

    def close(self) -> None:
        """Shut NVML down (a driver that is already gone has nothing left to shut)."""
        with contextlib.suppress(self._nvml.NVMLError):
            self._nvml.nvmlShutdown()


@dataclass(frozen=True)
class WorkerDevice:
    """The NVML device behind one worker's CUDA device; `handle` is None where it cannot be metered."""

    device: str  # NVML's UUID (GPU-... or MIG-...), else the PCI bus id
    handle: Any
    note: str = ""


def _by_uuid(nvml: Any, uuid: str) -> Any:
    try:
        return nvml.nvmlDeviceGetHandleByUUID(uuid)
    except nvml.NVMLError_NotFound:
        return None


def _mig_enabled(nvml: Any, handle: Any) -> bool:
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    except nvml.NVMLError_NotSupported:  # a GPU without MIG
        return False
    return bool(current == nvml.NVML_DEVICE_MIG_ENABLE)


def find_worker_device(
    *, uuid: str | None, pci_bus_id: str | None, cuda_visible_devices: str | None, local_index: int
) -> WorkerDevice:
    """The NVML device a worker's CUDA device is: by its UUID, else its PCI bus id, never by index.

    Args:
        uuid: The CUDA device's UUID as torch reports it (with or without a `GPU-`/`MIG-` prefix).
        pci_bus_id: Its PCI bus id (`00000000:3B:00.0`).
        cuda_visible_devices: The worker's CUDA_VISIBLE_DEVICES (integers, `GPU-<uuid>`, `MIG-<uuid>`).
        local_index: The worker's CUDA device index, its place in that list.

    Raises:
        EnergyMeterError: NVML is unavailable or knows no such device.
    """
    import pynvml  # noqa: PLC0415

    entries = [part.strip() for part in (cuda_visible_devices or "").split(",") if part.strip()]
    visible_entry = entries[local_index] if local_index < len(entries) else None
    if visible_entry is not None and visible_entry.startswith("MIG-"):
        return WorkerDevice(visible_entry, None, MIG_NOTE)
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        raise EnergyMeterError(f"NVML unavailable: {err}") from err
    with _nvml_errors("device lookup"):
        handle = None
        if uuid:
            bare = uuid.removeprefix("GPU-").removeprefix("MIG-")
            handle = _by_uuid(pynvml, f"GPU-{bare}")
            if handle is None and _by_uuid(pynvml, f"MIG-{bare}") is not None:
                return WorkerDevice(f"MIG-{bare}", None, MIG_NOTE)
        if handle is None and pci_bus_id:
            try:
                handle = pynvml.nvmlDeviceGetHandleByPciBusId(pci_bus_id)
            except pynvml.NVMLError_NotFound:
                handle = None
        if handle is None:
            raise EnergyMeterError(f"NVML knows no GPU with UUID {uuid!r} or PCI bus id {pci_bus_id!r}")
        name = _text(pynvml.nvmlDeviceGetUUID(handle))
        # A process on a MIG-enabled GPU runs in one of its instances (CUDA cannot use the whole GPU),
        # even where the bus id led to the parent.
        if _mig_enabled(pynvml, handle):
            return WorkerDevice(name, None, f"{MIG_NOTE} (MIG mode is on)")
        return WorkerDevice(name, handle)


class DeviceCounter:
    """One GPU's energy counter, read in the worker that runs on it: joules since opened; who else uses it."""

    def __init__(self, handle: Any, engine_pids: set[int]) -> None:
        """Start counting from the counter's value now.

        Raises:
            EnergyMeterError: The GPU has no energy counter (older than Volta) or NVML failed.
        """
        import pynvml  # noqa: PLC0415

        self._nvml = pynvml
        self._handle = handle
        self._engine_pids = engine_pids
        with _nvml_errors("energy counter"):
            self._last_mj = float(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        self._total_j = 0.0

    def joules(self) -> float:
        """Joules since opened, never decreasing: the counter restarts at 0 when the driver reloads."""
        with _nvml_errors("energy counter"):
            now_mj = float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        self._total_j += (now_mj - self._last_mj if now_mj >= self._last_mj else now_mj) / 1000.0
        self._last_mj = now_mj
        return self._total_j

    def other_processes(self) -> int:
        """How many processes outside this engine hold a compute context on the GPU."""
        with _nvml_errors("running processes"):
            running = self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle)
        return len({process.pid for process in running} - self._engine_pids)
