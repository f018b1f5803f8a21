"""On a real GPU: NVML's energy counter and integrated instant power agree under steady load.

Run on a GPU machine with `pytest -m gpu tests/gpu -s`; docs/gpu-energy.md records the figures.
"""

from __future__ import annotations

import pytest

from tests.gpu.nvml_window import WindowFigures, measure_window

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def window() -> WindowFigures:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    figures = measure_window()
    print(figures)  # noqa: T201 - the figures to record
    return figures


def test_counter_matches_power_integrated_every_20_ms_within_5_percent(window: WindowFigures) -> None:
    assert window.counter_joules == pytest.approx(window.fine_power_joules, rel=0.05)


def test_meter_fallback_at_sampler_period_matches_counter_within_5_percent(window: WindowFigures) -> None:
    assert window.sampler_fallback_joules == pytest.approx(window.counter_joules, rel=0.05)


def test_load_draws_more_than_idle(window: WindowFigures) -> None:
    assert window.loaded_watts_mean > window.idle_watts
