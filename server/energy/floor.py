"""The idle power floor: watts drawn with the server up and no work, learnt from idle stretches."""

from __future__ import annotations


class IdleFloor:
    """Learns the static floor from runs of idle intervals, re-measuring on every long enough idle run.

    The first `settle_s` of a run are skipped (power decays for a moment after work stops); once the rest
    of the run covers `min_idle_s`, the floor is that run's mean power, and it keeps following the run
    while it lasts. Until a first run qualifies the floor is 0: everything counts as dynamic.
    """

    def __init__(self, min_idle_s: float = 2.0, settle_s: float = 0.5) -> None:
        self.watts = 0.0
        self.measured = False
        self._min_idle_s = min_idle_s
        self._settle_s = settle_s
        self._run_s = 0.0
        self._counted_s = 0.0
        self._counted_j = 0.0

    def idle(self, duration_s: float, energy_j: float) -> None:
        """One idle interval (no engine step, no request in the engine) of `duration_s`."""
        self._run_s += duration_s
        if self._run_s <= self._settle_s:
            return
        self._counted_s += duration_s
        self._counted_j += energy_j
        if self._counted_s >= self._min_idle_s:
            self.watts = self._counted_j / self._counted_s
            self.measured = True

    def busy(self) -> None:
        """Work resumed: the current idle run ends."""
        self._run_s = self._counted_s = self._counted_j = 0.0
