"""The energy of the GPUs a benchmark's servers use, read with wattserve's own NVML meter.

The meter (`server.energy.meters.nvml.NvmlMeter`) is the one NVML reader of the project; this module only
picks the GPUs, turns "no GPU here" into `NoGpuError`, and describes the GPUs for the benchmark's record.
The meter reads NVML's total-energy counter (Volta and newer); on an older GPU it integrates instant
power at each reading, which two readings around a run cannot do justice to.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from server.energy.meters.base import EnergyMeter, EnergyMeterError
from server.energy.meters.nvml import NvmlMeter

__all__ = ["GpuEnergy", "NoGpuError", "energy_delta_j", "gpu_descriptions", "gpu_selection"]

# What `nvidia-smi` tells about each GPU for the record; energy is never read this way.
DESCRIPTION_QUERY = "index,name,uuid,power.limit,driver_version"


class NoGpuError(RuntimeError):
    """NVML is missing or failing, or finds no GPU (or not the GPUs selected) to measure."""


def gpu_selection(gpus: str | None, env: Mapping[str, str]) -> list[int] | None:
    """The GPUs to meter: `--gpus`, else `CUDA_VISIBLE_DEVICES`, else None (all of them).

    Args:
        gpus: A comma-separated list of NVML indices, or None.
        env: The environment the servers will run in.

    Returns:
        The NVML indices in order, or None for every GPU NVML finds.

    Raises:
        NoGpuError: If the selection is empty (`CUDA_VISIBLE_DEVICES=""` hides every GPU) or names a GPU
            other than by index (the meter opens GPUs by NVML index).
    """
    spec = gpus if gpus is not None else env.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        return None
    entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
    if not entries:
        raise NoGpuError(f"no GPU selected (GPU list {spec!r})")
    if not all(entry.isdigit() for entry in entries):
        raise NoGpuError(f"select GPUs by NVML index, not UUID (GPU list {spec!r})")
    return [int(entry) for entry in entries]


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:  # "[N/A]" on boards that report no power limit
        return None


def gpu_descriptions(
    selection: Sequence[int] | None, run: Callable[..., subprocess.CompletedProcess] = subprocess.run
) -> dict[str, Any]:
    """Names, UUIDs and power limits of the selected GPUs and the driver version, from `nvidia-smi`.

    Args:
        selection: NVML indices, or None for every GPU.
        run: Runs `nvidia-smi` (`subprocess.run`); tests pass a fake.

    Returns:
        `gpus` (a list of dicts, in the selection's order) and `driver_version`; both None when
        `nvidia-smi` is missing or fails, as the description is context, not a measurement.
    """
    command = ["nvidia-smi", f"--query-gpu={DESCRIPTION_QUERY}", "--format=csv,noheader,nounits"]
    try:
        lines = run(command, capture_output=True, text=True, check=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {"gpus": None, "driver_version": None}
    rows = {}
    driver_version = None
    for line in lines:
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != len(DESCRIPTION_QUERY.split(",")) or not cells[0].isdigit():
            continue
        index, name, uuid, power_limit, driver_version = cells
        rows[int(index)] = {
            "index": int(index),
            "name": name,
            "uuid": uuid,
            "power_limit_w": _float(power_limit),
        }
    order = sorted(rows) if selection is None else [index for index in selection if index in rows]
    return {"gpus": [rows[index] for index in order], "driver_version": driver_version}


class GpuEnergy:
    """Cumulative joules of a fixed set of GPUs, from the server's NVML meter.

    Open it with `GpuEnergy.open`, read it with `read_j` before and after a run, and close it.
    """

    def __init__(self, meter: EnergyMeter, selection: list[int] | None) -> None:
        self._meter = meter
        self._selection = selection

    @classmethod
    def open(
        cls, selection: list[int] | None, open_meter: Callable[[str | None], EnergyMeter] = NvmlMeter
    ) -> GpuEnergy:
        """Open the NVML meter on the selected GPUs.

        Args:
            selection: NVML indices (see `gpu_selection`), or None for every GPU.
            open_meter: Opens the meter on a `CUDA_VISIBLE_DEVICES`-style list (`NvmlMeter`).

        Returns:
            The opened meter.

        Raises:
            NoGpuError: If pynvml is not installed, NVML fails (no driver), finds no GPU, or a selected
                GPU does not exist.
        """
        try:
            meter = open_meter(None if selection is None else ",".join(map(str, selection)))
        except ImportError as err:
            raise NoGpuError("pynvml is not installed (pip install nvidia-ml-py)") from err
        except EnergyMeterError as err:
            raise NoGpuError(f"{err}: no NVIDIA driver or GPU here, or not the GPUs selected") from err
        if selection is not None and len(meter.devices) != len(selection):
            meter.close()
            raise NoGpuError(f"NVML cannot open the GPUs {selection} (it opened {meter.devices})")
        return cls(meter, selection)

    def read_j(self) -> list[float]:
        """Joules of each metered GPU since the meter was opened."""
        return self._meter.read_joules()

    def environment(self) -> dict[str, Any]:
        """The metered GPUs, the driver version and the meter, for the benchmark's record."""
        meter = {"source": self._meter.source, "devices": list(self._meter.devices)}
        return {**gpu_descriptions(self._selection), "energy_meter": meter}

    def close(self) -> None:
        """Close the meter (it shuts NVML down)."""
        self._meter.close()


def energy_delta_j(before_j: Sequence[float], after_j: Sequence[float]) -> float:
    """Joules used by all metered GPUs between two `read_j` readings."""
    return sum(after - before for before, after in zip(before_j, after_j, strict=True))
