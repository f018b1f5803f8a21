"""vLLM's worker extension that meters each worker's own device, and how it joins the engine arguments.

vLLM mixes `worker_extension_cls` into its worker class, in every worker process on every node (mp or
Ray executors alike), and `collective_rpc` calls its methods in each worker between engine steps. So each
worker reads the device it runs on, where the API process sees neither remote nodes' GPUs nor which
physical GPU a worker got. The methods only hand back a cached reading (see `device_probe`).
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
from typing import TYPE_CHECKING, Any

from server.energy.meters.device_probe import UNMETERED, DeviceProbe, DeviceReading, cpu_probe, gpu_probe

if TYPE_CHECKING:
    from vllm import AsyncEngineArgs

logger = logging.getLogger(__name__)

EXTENSION = f"{__name__}.EnergyWorkerExtension"
PIDS_RPC = "wattserve_energy_pids"
OPEN_RPC = "wattserve_energy_open"
READ_RPC = "wattserve_energy_read"


class EnergyWorkerExtension:
    """Mixed into vLLM's worker class by vLLM itself.

    Every name starts with `wattserve_energy`: vLLM refuses an extension whose attributes clash with the
    worker's.
    """

    def wattserve_energy_pids(self) -> dict[str, Any]:
        """This worker's process and its parent (engine core or executor), and the data-parallel size."""
        config = getattr(self, "vllm_config", None)
        data_parallel = config.parallel_config.data_parallel_size if config is not None else 1
        return {"pids": [os.getpid(), os.getppid()], "data_parallel_size": data_parallel}

    def wattserve_energy_open(
        self, engine_pids: list[int], watts_per_core: float, period_s: float
    ) -> dict[str, Any]:
        """Start reading this worker's device (once; later calls only read) and return its first reading.

        Args:
            engine_pids: Every engine process (from `wattserve_energy_pids`): other PIDs on the GPU share it.
            watts_per_core: The CPU estimate's model, for a CPU worker.
            period_s: Seconds between device reads on the probe's thread.
        """
        probe: DeviceProbe | None = getattr(self, "_wattserve_energy_probe", None)
        if probe is None:
            probe = _open_probe(
                getattr(self, "device", None),
                getattr(self, "rank", 0),
                set(engine_pids),
                watts_per_core,
                period_s,
            )
            self._wattserve_energy_probe = probe
        return probe.latest().to_wire()

    def wattserve_energy_read(self) -> dict[str, Any]:
        """The latest cached reading of this worker's device (no device access in the engine step)."""
        probe: DeviceProbe | None = getattr(self, "_wattserve_energy_probe", None)
        if probe is None:
            raise RuntimeError(f"{OPEN_RPC} was not called in this worker")
        return probe.latest().to_wire()


def _open_probe(
    device: Any, rank: int, engine_pids: set[int], watts_per_core: float, period_s: float
) -> DeviceProbe:
    node = socket.gethostname()
    kind = getattr(device, "type", None)
    if kind is None:  # vLLM sets the worker's device before it serves: not reached in a running engine
        return DeviceProbe(DeviceReading(node, f"rank{rank}", UNMETERED, None, "the worker has no device"))
    if kind == "cpu":
        return cpu_probe(node, rank, watts_per_core, period_s)
    if kind != "cuda":
        return DeviceProbe(
            DeviceReading(node, f"{kind}-rank{rank}", UNMETERED, None, f"no energy counter read on {kind}")
        )
    import torch  # noqa: PLC0415 - only CUDA workers get here

    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    uuid = str(getattr(props, "uuid", "")) or None
    bus_id = None
    if all(
        hasattr(props, name) for name in ("pci_domain_id", "pci_bus_id", "pci_device_id")
    ):  # not in older torch
        bus_id = f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
    return gpu_probe(
        node,
        uuid=uuid,
        pci_bus_id=bus_id,
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        local_index=index,
        engine_pids=engine_pids,
        period_s=period_s,
    )


def add_energy_extension(engine_args: AsyncEngineArgs, *, required: bool) -> bool:
    """Have vLLM mix `EnergyWorkerExtension` into its workers; False where it cannot.

    vLLM takes one extension class. A user's own `--worker-extension-cls` that subclasses ours keeps
    its place (it meters too); any other is left alone, and the workers cannot be metered.

    Raises:
        ValueError: `required` (`--energy-meter workers`) and the user's extension is not ours.
    """
    current = engine_args.worker_extension_cls
    if not current or current == EXTENSION:
        engine_args.worker_extension_cls = EXTENSION
        return True
    if _extends_ours(current):
        return True
    message = (
        f"--worker-extension-cls {current} takes vLLM's one worker-extension slot, which metering the "
        f"engine's workers needs: make {current} a subclass of {EXTENSION} to have both"
    )
    if required:
        raise ValueError(f"--energy-meter workers: {message}")
    logger.info("energy meter: workers not metered (%s)", message)
    return False


def _extends_ours(qualname: str) -> bool:
    module, _, name = qualname.rpartition(".")  # as vLLM resolves it
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(cls, type) and issubclass(cls, EnergyWorkerExtension)
