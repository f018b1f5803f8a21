"""The `EnergyMeter` protocol, its error, and the null meter used when metering is off."""

from __future__ import annotations

from typing import Protocol


class EnergyMeterError(Exception):
    """A meter could not be opened or read."""


class EnergyMeter(Protocol):
    """Cumulative energy per device since the meter was opened, in joules."""

    source: str  # "nvml", "rapl", "estimated" or "none"
    devices: list[str]

    def read_joules(self) -> list[float]:
        """Cumulative joules per device (same order as `devices`), monotonically non-decreasing."""
        ...

    def close(self) -> None:
        """Release the meter's resources."""
        ...


class NullEnergyMeter:
    """No metering (`--energy-meter none`): no devices, no energy."""

    source = "none"
    devices: list[str] = []  # noqa: RUF012 - never mutated

    def read_joules(self) -> list[float]:
        """Nothing measured."""
        return []

    def close(self) -> None:
        """Nothing to release."""
