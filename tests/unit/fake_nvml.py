"""A fake of the slice of pynvml the meters use: GPUs with UUIDs, PCI bus ids, MIG, and processes on them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FakeGpu:
    uuid: str  # "GPU-..."
    bus_id: str
    energy_mj: int = 1_000_000
    mig: bool = False
    mig_uuids: list[str] = field(default_factory=list)  # its instances, "MIG-..."
    pids: list[int] = field(default_factory=list)
    energy_reads: int = 0


@dataclass
class _Process:
    pid: int
    usedGpuMemory: int = 0  # noqa: N815 - pynvml's name


class FakeNvml:
    """Handles are the GPUs' NVML indices; MIG instance handles are their UUID strings."""

    NVML_DEVICE_MIG_ENABLE = 1
    NVML_SUCCESS = 0

    class NVMLError(Exception):
        pass

    class NVMLError_NotFound(NVMLError):  # noqa: N801 - pynvml's name
        pass

    class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's name
        pass

    def __init__(self, gpus: list[FakeGpu], *, init_fails: bool = False) -> None:
        self.gpus = gpus
        self.init_fails = init_fails

    def nvmlInit(self) -> None:
        if self.init_fails:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index >= len(self.gpus):
            raise self.NVMLError("Invalid Argument")
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int | str:
        for index, gpu in enumerate(self.gpus):
            if gpu.uuid == uuid:
                return index
            if uuid in gpu.mig_uuids:
                return uuid
        raise self.NVMLError_NotFound("Not Found")

    def nvmlDeviceGetHandleByPciBusId(self, bus_id: str) -> int:
        for index, gpu in enumerate(self.gpus):
            if gpu.bus_id == bus_id:
                return index
        raise self.NVMLError_NotFound("Not Found")

    def nvmlDeviceGetUUID(self, handle: int | str) -> str:
        return handle if isinstance(handle, str) else self.gpus[handle].uuid

    def nvmlDeviceGetMigMode(self, handle: int) -> tuple[int, int]:
        if not self.gpus[handle].mig:
            raise self.NVMLError_NotSupported("Not Supported")
        return 1, 1

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        if isinstance(handle, str):  # a MIG instance has no counter of its own
            raise self.NVMLError_NotSupported("Not Supported")
        self.gpus[handle].energy_reads += 1
        return self.gpus[handle].energy_mj

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[_Process]:
        return [_Process(pid) for pid in self.gpus[handle].pids]
