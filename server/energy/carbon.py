"""Joules to grams of CO2e, through the grid's carbon intensity and the data centre's PUE."""

from __future__ import annotations

from dataclasses import dataclass

JOULES_PER_KWH = 3.6e6
# World average grid intensity used by CodeCarbon, gCO2e/kWh.
WORLD_AVERAGE_G_PER_KWH = 475.0


@dataclass(frozen=True)
class CarbonModel:
    """grams = joules / 3.6e6 × PUE × grid intensity."""

    grid_g_per_kwh: float = WORLD_AVERAGE_G_PER_KWH
    pue: float = 1.0

    def grams(self, joules: float) -> float:
        """Grams of CO2e for `joules` of device energy."""
        return joules / JOULES_PER_KWH * self.pue * self.grid_g_per_kwh

    def grams_per_joule_at(self, monotonic_s: float) -> float:
        """Grams CO2e per device joule for work done at `monotonic_s` (the grid intensity then)."""
        return self.pue * self.grid_g_per_kwh / JOULES_PER_KWH
