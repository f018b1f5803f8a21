"""Flags for energy: the meter, how its joules are shared among requests, and carbon."""

from __future__ import annotations

from server.cli_flags.flag import Flag
from server.cli_values import energy_meter

ENERGY_FLAGS: list[Flag] = [
    Flag(
        "--energy-meter",
        "energy_meter",
        "auto: NVML, else RAPL, else the labelled CPU-time estimate. node: the whole node, NVML for the "
        "GPUs and RAPL (else the estimate) for the host. Or parts joined by +: nvml+rapl, nvml+estimated; "
        "each part's devices stay named in /v1/energy. workers: each engine worker meters its own device "
        "(any node; MIG and shared GPUs stated); auto and nvml use them too where this process sees NVML "
        "GPUs and the workers answer. none: no metering.",
        {"type": energy_meter},
    ),
    Flag("--energy-sample-period", "energy_sample_period_s", "Seconds between meter reads.", {"type": float}),
    Flag(
        "--prefill-energy-weight",
        "prefill_energy_weight",
        "Dynamic-energy weight of a prompt token.",
        {"type": float},
    ),
    Flag(
        "--decode-energy-weight",
        "decode_energy_weight",
        "Dynamic-energy weight of an output token.",
        {"type": float},
    ),
    Flag(
        "--idle-floor-min-seconds",
        "idle_floor_min_seconds",
        "Idle stretch that re-measures the idle power floor.",
        {"type": float},
    ),
    Flag(
        "--grid-intensity",
        "grid_intensity_g_per_kwh",
        "Grid carbon intensity, gCO2e per kWh.",
        {"type": float},
    ),
    Flag("--pue", "pue", "Power usage effectiveness of the data centre.", {"type": float}),
    Flag(
        "--estimated-watts-per-core",
        "estimated_watts_per_core",
        "Watts per busy core for the estimate.",
        {"type": float},
    ),
]
