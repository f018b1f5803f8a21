"""GPU checks run only where NVML finds an NVIDIA GPU; elsewhere they are skipped with the reason."""

from __future__ import annotations

import pytest


def _nvml_reason() -> str | None:
    try:
        import pynvml  # noqa: PLC0415

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except Exception as err:  # noqa: BLE001 - any failure means: no usable GPU here
        return f"no NVIDIA GPU with NVML here ({type(err).__name__}: {err})"
    return None if count else "NVML found no GPU"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = _nvml_reason()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(pytest.mark.skip(reason=reason))
