"""Joules to grams of CO2e: the grid's carbon intensity at the time of work, times the data centre's PUE."""

from __future__ import annotations

import time

from server.energy.intensity import IntensitySource

JOULES_PER_KWH = 3.6e6
# World average grid intensity used by CodeCarbon, gCO2e/kWh.
WORLD_AVERAGE_G_PER_KWH = 475.0


class CarbonModel:
    """grams = joules / 3.6e6 × PUE × grid intensity (at the time the joules were spent)."""

    def __init__(self, source: IntensitySource | None = None, pue: float = 1.0) -> None:
        self.source = source or IntensitySource(None, WORLD_AVERAGE_G_PER_KWH)
        self.pue = pue

    @property
    def grid_g_per_kwh(self) -> float:
        """The grid's intensity now, gCO2e/kWh."""
        return self.source.now()

    def grams(self, joules: float) -> float:
        """Grams of CO2e for `joules` of device energy spent now."""
        return joules / JOULES_PER_KWH * self.pue * self.grid_g_per_kwh

    def grams_per_joule_at(self, monotonic_s: float) -> float:
        """Grams CO2e per device joule for work done at `monotonic_s` (the grid intensity then)."""
        wall_s = time.time() - (time.monotonic() - monotonic_s)
        return self.pue * self.source.at(wall_s) / JOULES_PER_KWH
