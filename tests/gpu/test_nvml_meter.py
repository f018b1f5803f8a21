"""On a real GPU: the NVML energy counter and the integral of instant power agree under steady load.

Run on a GPU machine with `pytest -m gpu tests/gpu -s`; it prints the figures to record in docs/.
"""

from __future__ import annotations

import threading
import time

import pytest

from server.energy.meters.nvml import NvmlMeter

pytestmark = pytest.mark.gpu
DURATION_S = 30.0
POWER_PERIOD_S = 0.02


def test_counter_energy_matches_integrated_power_within_5_percent() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    meter = NvmlMeter("0")
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            a @ a  # noqa: B018 - the work is the point
        torch.cuda.synchronize()

    worker = threading.Thread(target=load)
    worker.start()
    time.sleep(3)  # reach steady clocks and power
    integrated_j, last = 0.0, None
    start_j = meter.read_joules()[0]
    started = time.monotonic()
    while time.monotonic() - started < DURATION_S:
        now, watts = time.monotonic(), meter.power_w()[0]
        if last is not None:
            integrated_j += (now - last[0]) * (watts + last[1]) / 2
        last = (now, watts)
        time.sleep(POWER_PERIOD_S)
    counter_j = meter.read_joules()[0] - start_j
    stop.set()
    worker.join()
    meter.close()
    print(f"counter {counter_j:.1f} J, integrated power {integrated_j:.1f} J over {DURATION_S:.0f} s")  # noqa: T201
    assert counter_j == pytest.approx(integrated_j, rel=0.05)
