"""One measurement window on a real GPU under a steady bf16 matmul load, shared by the tests and docs.

Three views of the same 30 s are taken at once: the NVML total-energy counter (what `NvmlMeter` uses),
instant power integrated every 20 ms by this module, and `NvmlMeter` forced into its power-integration
fallback and read at the sampler's default 100 ms period. `python -m tests.gpu.nvml_window [out.json]`
prints the figures recorded in docs/gpu-energy.md.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from server.energy.meters.nvml import NvmlMeter

WINDOW_S = 30.0
FINE_PERIOD_S = 0.02
SAMPLER_PERIOD_S = 0.1
WARM_UP_S = 3.0
MATMUL_SIZE = 8192


@dataclass
class WindowFigures:
    """What one window measured; joules over `window_s` seconds of steady load."""

    gpu: str
    driver: str
    nvml_version: str
    window_s: float
    idle_watts: float
    loaded_watts_mean: float
    counter_joules: float
    fine_power_joules: float
    sampler_fallback_joules: float
    read_latency_ms_p50: float
    read_latency_ms_p99: float
    counter_update_period_ms: float


def _poll(stop: threading.Event, period_s: float, read: Callable[[], None]) -> None:
    while not stop.wait(period_s):
        read()


def _read_latency_ms(meter: NvmlMeter, reads: int = 1000) -> list[float]:
    latencies = []
    for _ in range(reads):
        started = time.perf_counter()
        meter.read_joules()
        latencies.append((time.perf_counter() - started) * 1000)
    return sorted(latencies)


def _counter_update_period_ms(meter: NvmlMeter, duration_s: float = 2.0) -> float:
    """Mean time between changes of the counter when polled as fast as NVML answers."""
    changes, last_value = [], meter.read_joules()[0]
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        value = meter.read_joules()[0]
        if value != last_value:
            changes.append(time.monotonic())
            last_value = value
    gaps = [b - a for a, b in zip(changes, changes[1:], strict=False)]
    return statistics.fmean(gaps) * 1000 if gaps else float("nan")


def _mean_watts(meter: NvmlMeter, duration_s: float) -> float:
    samples = []
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        samples.append(meter.power_w()[0])
        time.sleep(FINE_PERIOD_S)  # the sampling period of this measurement
    return statistics.fmean(samples)


def measure_window(window_s: float = WINDOW_S) -> WindowFigures:
    """Idle power, then `window_s` of steady matmul load seen by the three views."""
    import pynvml  # noqa: PLC0415
    import torch  # noqa: PLC0415

    counter_meter = NvmlMeter("0")
    fallback_meter = NvmlMeter("0", use_energy_counter=False)
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    gpu, driver = pynvml.nvmlDeviceGetName(handle), pynvml.nvmlSystemGetDriverVersion()
    idle_watts = _mean_watts(counter_meter, 3.0)
    latencies = _read_latency_ms(counter_meter)

    matrix = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device="cuda", dtype=torch.bfloat16)
    stop_load = threading.Event()

    def load() -> None:
        while not stop_load.is_set():
            matrix @ matrix  # noqa: B018 - the work is the point
            torch.cuda.synchronize()

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(WARM_UP_S)  # the measurement's warm-up under load: steady clocks and power
        update_period_ms = _counter_update_period_ms(counter_meter)
        fallback_start = fallback_meter.read_joules()[0]
        stop_fallback = threading.Event()
        fallback = threading.Thread(
            target=_poll, args=(stop_fallback, SAMPLER_PERIOD_S, fallback_meter.read_joules)
        )
        counter_start = counter_meter.read_joules()[0]
        fallback.start()
        fine_joules, fine_samples, last = 0.0, [], None
        started = time.monotonic()
        while time.monotonic() - started < window_s:
            now, watts = time.monotonic(), counter_meter.power_w()[0]
            if last is not None:
                fine_joules += (now - last[0]) * (watts + last[1]) / 2
            last = (now, watts)
            fine_samples.append(watts)
            time.sleep(FINE_PERIOD_S)  # the sampling period of the fine-grained reference
        counter_joules = counter_meter.read_joules()[0] - counter_start
        stop_fallback.set()
        fallback.join()
        fallback_joules = fallback_meter.read_joules()[0] - fallback_start
    finally:
        stop_load.set()
        worker.join()
    counter_meter.close()
    fallback_meter.close()
    return WindowFigures(
        gpu=gpu,
        driver=driver,
        nvml_version=pynvml.nvmlSystemGetNVMLVersion(),
        window_s=window_s,
        idle_watts=idle_watts,
        loaded_watts_mean=statistics.fmean(fine_samples),
        counter_joules=counter_joules,
        fine_power_joules=fine_joules,
        sampler_fallback_joules=fallback_joules,
        read_latency_ms_p50=latencies[len(latencies) // 2],
        read_latency_ms_p99=latencies[int(len(latencies) * 0.99)],
        counter_update_period_ms=update_period_ms,
    )


if __name__ == "__main__":
    figures = asdict(measure_window())
    print(json.dumps(figures, indent=2))  # noqa: T201
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as out:
            json.dump(figures, out, indent=2)
