"""Grid carbon intensity over time (gCO2e/kWh): a constant, a file of timestamped values, or an HTTP API.

Documents understood (from a file or an HTTP endpoint):
- CSV lines `timestamp,value` (ISO 8601 or Unix seconds; a header line is skipped);
- Electricity Maps: `{"carbonIntensity": 302, "datetime": "..."}` (latest) or `{"history": [...]}`;
- WattTime v3: `{"data": [{"point_time": "...", "value": 812.5}], "meta": {"units": "lbs_co2_per_mwh"}}`;
- a JSON list of `{"timestamp"|"datetime", "value"|"carbonIntensity"}` objects.
The value at a time is the latest one at or before it (the first one before the series starts).
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LBS_PER_MWH_IN_G_PER_KWH = 0.45359237  # 1 lb/MWh = 453.59237 g / 1000 kWh


class IntensityFormatError(ValueError):
    """A grid-intensity document this server cannot read."""


def _epoch_s(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    raise IntensityFormatError(f"not a timestamp: {value!r}")


def _value(entry: dict, units_factor: float) -> float:
    for key in ("carbonIntensity", "value", "g_per_kwh", "intensity"):
        if isinstance(entry.get(key), int | float) and not isinstance(entry.get(key), bool):
            return float(entry[key]) * units_factor
    raise IntensityFormatError(f"no intensity value in {entry!r}")


def _stamp(entry: dict) -> float:
    for key in ("datetime", "timestamp", "point_time", "time"):
        if key in entry:
            return _epoch_s(entry[key])
    raise IntensityFormatError(f"no timestamp in {entry!r}")


def parse_document(text: str) -> list[tuple[float, float]]:
    """Points (epoch seconds, gCO2e/kWh), sorted, from any document the module docstring lists.

    Raises:
        IntensityFormatError: The document is none of them.
    """
    stripped = text.strip()
    if not stripped:
        raise IntensityFormatError("empty document")
    if stripped[0] in "[{":
        try:
            document = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise IntensityFormatError(f"not JSON: {err}") from err
        points = _points_from_json(document)
        if not points:
            raise IntensityFormatError("no timestamped values")
        return sorted(points)
    points = []
    for row in csv.reader(io.StringIO(stripped)):
        if len(row) < 2 or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        try:
            points.append((_epoch_s(row[0]), float(row[1])))
        except ValueError:
            if points:  # only a first (header) line may be unreadable
                raise IntensityFormatError(f"unreadable line: {row!r}") from None
    if not points:
        raise IntensityFormatError("no timestamped values")
    return sorted(points)


def _points_from_json(document: Any) -> list[tuple[float, float]]:
    if isinstance(document, list):
        return [(_stamp(entry), _value(entry, 1.0)) for entry in document if isinstance(entry, dict)]
    if not isinstance(document, dict):
        raise IntensityFormatError("expected a JSON object or list")
    if isinstance(document.get("data"), list):  # WattTime v3
        units = str((document.get("meta") or {}).get("units", "")).lower()
        factor = LBS_PER_MWH_IN_G_PER_KWH if "lbs" in units else 1.0
        return [(_stamp(e), _value(e, factor)) for e in document["data"] if isinstance(e, dict)]
    if isinstance(document.get("history"), list):  # Electricity Maps history
        return [(_stamp(e), _value(e, 1.0)) for e in document["history"] if isinstance(e, dict)]
    return [(_stamp(document), _value(document, 1.0))]  # Electricity Maps latest


class IntensitySeries:
    """A step function of time: the latest value at or before a moment."""

    def __init__(self, points: Sequence[tuple[float, float]], default_g_per_kwh: float) -> None:
        self._times = [t for t, _ in points]
        self._values = [v for _, v in points]
        self._default = default_g_per_kwh

    def at(self, epoch_s: float) -> float:
        """gCO2e/kWh at `epoch_s` (the default until any value is known)."""
        if not self._times:
            return self._default
        index = bisect.bisect_right(self._times, epoch_s) - 1
        return self._values[max(index, 0)]


class IntensitySource:
    """Where the current intensity series comes from; `refresh` re-reads it (off the event loop)."""

    def __init__(self, location: str | None, default_g_per_kwh: float, headers: dict[str, str] | None = None):
        self.location = location
        self.headers = headers or {}
        self.series = IntensitySeries([], default_g_per_kwh)
        self._default = default_g_per_kwh
        self._file_mtime: float | None = None

    @property
    def live(self) -> bool:
        """Whether intensity follows a source (else it is the constant `--grid-intensity`)."""
        return self.location is not None

    def at(self, epoch_s: float) -> float:
        """gCO2e/kWh at a wall-clock time."""
        return self.series.at(epoch_s)

    def now(self) -> float:
        """gCO2e/kWh now."""
        return self.series.at(time.time())

    def refresh(self) -> None:
        """Read the source again; a failure keeps the last good series and is logged."""
        if self.location is None:
            return
        try:
            if self.location.startswith(("http://", "https://")):
                import httpx  # noqa: PLC0415 - only with an HTTP source

                response = httpx.get(self.location, headers=self.headers, timeout=10)
                response.raise_for_status()
                text = response.text
            else:
                path = Path(self.location)
                mtime = path.stat().st_mtime
                if mtime == self._file_mtime:
                    return
                text, self._file_mtime = path.read_text(), mtime
            self.series = IntensitySeries(parse_document(text), self._default)
        except Exception as err:  # noqa: BLE001 - a bad file or a failing API must never stop the server
            logger.warning("grid intensity from %s not updated: %s", self.location, err)
