"""RAPL through Linux powercap sysfs: package and DRAM energy counters, with counter wrap handled."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from server.energy.meters.base import EnergyMeterError

POWERCAP = Path("/sys/class/powercap")


@dataclass
class _Zone:
    name: str
    energy_path: Path
    range_uj: int
    last_uj: int
    total_uj: int = 0


class RaplMeter:
    """Package (`intel-rapl:N`) and DRAM sub-zones; each counter wraps at its `max_energy_range_uj`."""

    source = "rapl"

    def __init__(self, root: Path = POWERCAP) -> None:
        self._zones: list[_Zone] = []
        for package in sorted(root.glob("intel-rapl:[0-9]*")):
            if package.name.count(":") != 1:
                continue
            self._zones.append(self._open(package))
            for sub in sorted(package.glob(f"{package.name}:[0-9]*")):
                if (sub / "name").read_text().strip() == "dram":
                    self._zones.append(self._open(sub))
        if not self._zones:
            raise EnergyMeterError(f"no readable RAPL zones under {root}")
        self.devices = [zone.name for zone in self._zones]

    @staticmethod
    def _open(zone_dir: Path) -> _Zone:
        try:
            name = f"{zone_dir.name}/{(zone_dir / 'name').read_text().strip()}"
            energy = zone_dir / "energy_uj"
            return _Zone(
                name, energy, int((zone_dir / "max_energy_range_uj").read_text()), int(energy.read_text())
            )
        except (OSError, ValueError) as err:
            raise EnergyMeterError(f"cannot read RAPL zone {zone_dir}: {err}") from err

    def read_joules(self) -> list[float]:
        """Cumulative joules per zone since the meter was opened."""
        for zone in self._zones:
            try:
                now_uj = int(zone.energy_path.read_text())
            except (OSError, ValueError) as err:
                raise EnergyMeterError(f"cannot read {zone.energy_path}: {err}") from err
            delta = now_uj - zone.last_uj
            if delta < 0:  # the counter wrapped past max_energy_range_uj
                delta += zone.range_uj
            zone.total_uj += delta
            zone.last_uj = now_uj
        return [zone.total_uj / 1e6 for zone in self._zones]

    def close(self) -> None:
        """Nothing to release."""
