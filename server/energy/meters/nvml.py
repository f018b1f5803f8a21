"""NVIDIA GPUs through NVML (`nvidia-ml-py`): the only module that imports pynvml.

Uses the total-energy counter (mJ, Volta and newer); on GPUs without it, integrates the instant power
field. NVML errors become `EnergyMeterError`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from server.energy.meters.base import EnergyMeterError


@contextlib.contextmanager
def _nvml_errors(what: str) -> Iterator[None]:
    import pynvml  # noqa: PLC0415

    try:
        yield
    except pynvml.NVMLError as err:
        raise EnergyMeterError(f"NVML {what}: {err}") from err


def visible_indices(cuda_visible_devices: str | None, count: int) -> list[int]:
    """NVML indices of the GPUs the engine sees (CUDA_VISIBLE_DEVICES as integers; else all)."""
    if not cuda_visible_devices:
        return list(range(count))
    indices = []
    for raw in cuda_visible_devices.split(","):
        part = raw.strip()
        if part.isdigit() and int(part) < count:
            indices.append(int(part))
    return indices


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
            count = pynvml.nvmlDeviceGetCount()
            indices = visible_indices(cuda_visible_devices, count)
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in indices]
            self.devices = [f"gpu{i}" for i in indices]
        if not self._handles:
            raise EnergyMeterError("NVML found no visible GPU")
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
