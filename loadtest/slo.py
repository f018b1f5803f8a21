"""Service-level objectives: parsing, goodput, and finding the energy-optimal point that meets them."""

from __future__ import annotations

import re

from loadtest.results import Distribution, PointResult, RequestRecord, energy_field

_energy = energy_field("joules_per_output_token")
METRICS = ("ttft", "itl", "tpot", "e2e")
PERCENTILES = ("p50", "p90", "p95", "p99", "p999")
_UNITS = {"ms": 1e-3, "s": 1.0, "": 1.0}
_VALUE = re.compile(r"^([0-9]*\.?[0-9]+)(ms|s)?$")


def parse_slos(spec: str) -> dict[str, float]:
    """`"ttft_p90=500ms,itl_p90=50ms"` -> `{"ttft_p90": 0.5, "itl_p90": 0.05}`, in seconds."""
    slos: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        metric, _, percentile = key.strip().partition("_")
        match = _VALUE.match(value.strip())
        if not sep or metric not in METRICS or percentile not in PERCENTILES or not match:
            raise ValueError(
                f"bad SLO {part!r}: expected METRIC_PCT=VALUE, METRIC in {METRICS}, PCT in {PERCENTILES}, "
                "VALUE like 500ms or 0.5s"
            )
        slos[key.strip()] = float(match.group(1)) * _UNITS[match.group(2) or ""]
    return slos


def _request_value(record: RequestRecord, metric: str) -> float | None:
    """A request's own figure for an SLO metric; for ITL, its mean gap (its TPOT)."""
    if metric == "ttft":
        return record.ttft_s
    if metric == "e2e":
        return record.e2e_s
    return record.tpot_s


def request_meets(record: RequestRecord, slos: dict[str, float]) -> bool:
    """Whether one request succeeded and each of its figures is within every SLO's limit."""
    if not record.ok:
        return False
    for key, limit in slos.items():
        value = _request_value(record, key.partition("_")[0])
        if value is not None and value > limit:
            return False
    return True


def point_meets(distributions: dict[str, Distribution], slos: dict[str, float]) -> bool:
    """Whether each SLO's percentile of the point's distribution is within its limit."""
    for key, limit in slos.items():
        metric, _, percentile = key.partition("_")
        value = getattr(distributions[metric], percentile)
        if value is None or value > limit:
            return False
    return True


def _eligible(point: PointResult) -> bool:
    """Valid, not saturated, and with J/output-token: a point whose energy figures can be ranked."""
    return point.validity.verdict != "fail" and not point.validity.saturated and bool(_energy(point))


def pareto_front(points: list[PointResult]) -> list[int]:
    """Indices of eligible points not beaten on both J/output-token and p99 latency from the schedule."""
    candidates = [p for p in points if _eligible(p) and p.e2e_from_schedule_s.p99]
    front = []
    for point in candidates:
        energy, latency = _energy(point), point.e2e_from_schedule_s.p99
        dominated = any(
            _energy(other) <= energy
            and other.e2e_from_schedule_s.p99 <= latency
            and (_energy(other) < energy or other.e2e_from_schedule_s.p99 < latency)
            for other in candidates
        )
        if not dominated:
            front.append(point.index)
    return sorted(front)


def best_point(points: list[PointResult]) -> int | None:
    """The eligible point with the lowest J/output-token among those meeting the SLOs (or all, without)."""
    eligible = [p for p in points if _eligible(p) and p.slo_met is not False]
    return min(eligible, key=_energy).index if eligible else None
