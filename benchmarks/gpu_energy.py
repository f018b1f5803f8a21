"""Read the NVML total-energy counters of the GPUs a benchmark's servers use, independently of the servers."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

__all__ = ["GpuEnergy", "GpuInfo", "NoGpuError", "energy_delta_j", "gpu_selection"]


class NoGpuError(RuntimeError):
    """NVML is missing or failing, or finds no GPU (with an energy counter) to measure."""


@dataclass(frozen=True)
class GpuInfo:
    """One metered GPU, as NVML describes it."""

    index: int
    name: str
    uuid: str
    power_limit_w: float | None


def gpu_selection(gpus: str | None, env: Mapping[str, str]) -> list[str] | None:
    """The GPUs to meter: `--gpus`, else `CUDA_VISIBLE_DEVICES`, else None (all of them).

    Args:
        gpus: A comma-separated list of NVML indices or GPU UUIDs, or None.
        env: The environment the servers will run in.

    Returns:
        The entries (indices or UUIDs) in order, or None for every GPU NVML finds.

    Raises:
        NoGpuError: If the selection is empty (`CUDA_VISIBLE_DEVICES=""` hides every GPU).
    """
    spec = gpus if gpus is not None else env.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        return None
    entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
    if not entries:
        raise NoGpuError(f"no GPU selected (GPU list {spec!r})")
    return entries


def _import_pynvml() -> ModuleType:
    return importlib.import_module("pynvml")


def _text(value: str | bytes) -> str:
    # Old nvidia-ml-py releases return bytes, newer ones str.
    return value.decode() if isinstance(value, bytes) else value


class GpuEnergy:
    """Cumulative energy of a fixed set of GPUs from NVML's total-energy counter (mJ, Volta and newer).

    Open it with `GpuEnergy.open`, read it with `read_mj` before and after a run, and close it.
    """

    def __init__(self, nvml: ModuleType, handles: list[Any], gpus: list[GpuInfo]) -> None:
        self._nvml = nvml
        self._handles = handles
        self.gpus = gpus

    @classmethod
    def open(
        cls, selection: Sequence[str] | None, load_nvml: Callable[[], ModuleType] = _import_pynvml
    ) -> GpuEnergy:
        """Initialise NVML and check that every selected GPU has an energy counter.

        Args:
            selection: NVML indices or UUIDs (see `gpu_selection`), or None for every GPU.
            load_nvml: Returns the `pynvml` module (from the nvidia-ml-py package); tests pass a fake.

        Returns:
            The opened meter.

        Raises:
            NoGpuError: If pynvml is not installed, NVML fails (no driver), finds no GPU, a selected GPU
                does not exist, or a GPU has no energy counter.
        """
        try:
            nvml = load_nvml()
        except ImportError as err:
            raise NoGpuError("pynvml is not installed (pip install nvidia-ml-py)") from err
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as err:
            raise NoGpuError(f"NVML failed to start ({err}): no NVIDIA driver or GPU here") from err
        try:
            handles = cls._handles(nvml, selection)
            gpus = [cls._describe(nvml, handle) for handle in handles]
            for handle, gpu in zip(handles, gpus, strict=True):
                try:
                    nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
                except nvml.NVMLError as err:
                    raise NoGpuError(
                        f"GPU {gpu.index} ({gpu.name}) has no NVML energy counter ({err}); "
                        "it needs a Volta or newer GPU"
                    ) from err
        except BaseException:
            nvml.nvmlShutdown()
            raise
        return cls(nvml, handles, gpus)

    @staticmethod
    def _handles(nvml: ModuleType, selection: Sequence[str] | None) -> list[Any]:
        try:
            count = nvml.nvmlDeviceGetCount()
            if count == 0:
                raise NoGpuError("NVML finds no GPU")
            if selection is None:
                return [nvml.nvmlDeviceGetHandleByIndex(index) for index in range(count)]
            return [
                nvml.nvmlDeviceGetHandleByIndex(int(entry))
                if entry.isdigit()
                else nvml.nvmlDeviceGetHandleByUUID(entry)
                for entry in selection
            ]
        except nvml.NVMLError as err:
            raise NoGpuError(f"NVML cannot open the GPUs {list(selection or [])} ({err})") from err

    @staticmethod
    def _describe(nvml: ModuleType, handle: Any) -> GpuInfo:
        try:
            power_limit_w = nvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000
        except nvml.NVMLError:  # not every board reports one; the figure is context, not a measurement
            power_limit_w = None
        return GpuInfo(
            index=nvml.nvmlDeviceGetIndex(handle),
            name=_text(nvml.nvmlDeviceGetName(handle)),
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            power_limit_w=power_limit_w,
        )

    def read_mj(self) -> list[int]:
        """The total-energy counter of each metered GPU, in millijoules since the driver loaded."""
        return [self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle) for handle in self._handles]

    def environment(self) -> dict[str, Any]:
        """The metered GPUs, driver and NVML versions, for the benchmark's record."""

        def version(read: Callable[[], str | bytes]) -> str | None:
            try:
                return _text(read())
            except self._nvml.NVMLError:
                return None

        return {
            "gpus": [asdict(gpu) for gpu in self.gpus],
            "driver_version": version(self._nvml.nvmlSystemGetDriverVersion),
            "nvml_version": version(self._nvml.nvmlSystemGetNVMLVersion),
        }

    def close(self) -> None:
        """Shut NVML down."""
        self._nvml.nvmlShutdown()


def energy_delta_j(before_mj: Sequence[int], after_mj: Sequence[int]) -> float:
    """Joules used by all metered GPUs between two `read_mj` readings."""
    return sum(after - before for before, after in zip(before_mj, after_mj, strict=True)) / 1000
