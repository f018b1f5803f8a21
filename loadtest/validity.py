"""The validity stamp of a load point: can its figures be trusted?

Each check passes, warns or fails; the point's verdict is the worst. A failed point stays in the
report, marked, but is kept out of the Pareto front and the energy-optimal search. So is a saturated
one (an open loop answered well below its offered rate): its figures are real, but they describe a
server that could not keep up, not the cost of serving that load.
"""

from __future__ import annotations

from loadtest.results import Check, PointResult, RequestRecord, Validity, Verdict
from loadtest.saturation import SATURATION_SHARE, answered_share, is_saturated

LAG_P99_WARN_S, LAG_P99_FAIL_S = 0.010, 0.050  # the client sending late hides server latency
CPU_WARN, CPU_FAIL = 0.75, 0.90  # of one core: the client's event loop is one thread
ERROR_WARN, ERROR_FAIL = 0.0, 0.10  # share of measured requests that failed
MAX_SCRAPE_GAP_S = 2.5  # /metrics is read every second; a longer hole blurs the window's edges
_ORDER = {"pass": 0, "warn": 1, "fail": 2}


def _level(value: float, warn: float, fail: float) -> Verdict:
    return "fail" if value > fail else "warn" if value > warn else "pass"


def _checks(point: PointResult, largest_gap_s: float | None) -> list[Check]:
    checks: list[Check] = []

    def add(
        name: str, status: Verdict, detail: str, value: float | None = None, limit: float | None = None
    ) -> None:
        checks.append(Check(name=name, status=status, value=value, limit=limit, detail=detail))

    lag = point.schedule_lag_s.p99 or 0.0
    add(
        "schedule_lag_p99",
        _level(lag, LAG_P99_WARN_S, LAG_P99_FAIL_S),
        "sent later than scheduled",
        lag,
        LAG_P99_WARN_S,
    )
    cpu = point.client_cpu_fraction
    add("client_cpu", _level(cpu, CPU_WARN, CPU_FAIL), "harness CPU time per second, in cores", cpu, CPU_WARN)
    failed = (point.measured - point.ok) / point.measured if point.measured else 1.0
    add(
        "errors",
        _level(failed, ERROR_WARN, ERROR_FAIL),
        f"failed requests by kind: {point.errors}",
        failed,
        ERROR_FAIL,
    )
    share = answered_share(point)
    if share is not None:
        detail = (
            f"answered {point.request_throughput:.3g} req/s of {point.offered_rps:.3g} offered "
            f"(the window's {point.measured} requests answered over {point.answer_span_s:.3g} s, "
            f"scheduled over {point.window_s:.3g} s)"
        )
        add("saturation", "warn" if is_saturated(point) else "pass", detail, share, SATURATION_SHARE)
    tokens = point.tokens
    if sum(n for source, n in tokens.sources.items() if source != "usage"):
        add("token_source", "warn", f"requests counted without the server's usage: {tokens.sources}")
    if tokens.match is None:
        add("token_reconciliation", "warn", "the target exposes no token counters")
    else:
        detail = (
            f"prompt/completion tokens: client {tokens.client_prompt}/{tokens.client_completion}, "
            f"server {tokens.server_prompt}/{tokens.server_completion}"
        )
        add("token_reconciliation", "pass" if tokens.match else "fail", detail)
    energy = point.energy
    if energy is not None and energy.attribution_match is not None:
        detail = (
            f"Σ usage.energy {energy.attributed_joules:.3f} J, server {energy.server_attributed_joules:.3f} J"
        )
        add("energy_reconciliation", "pass" if energy.attribution_match else "fail", detail)
    if largest_gap_s is not None:
        status: Verdict = "pass" if largest_gap_s <= MAX_SCRAPE_GAP_S else "warn"
        add(
            "metrics_coverage",
            status,
            "longest time without a /metrics scrape",
            largest_gap_s,
            MAX_SCRAPE_GAP_S,
        )
    elif energy is not None or tokens.match is not None:
        add("metrics_coverage", "fail", "the /metrics scrapes do not span the window")
    return checks


def assess(point: PointResult, records: list[RequestRecord], largest_gap_s: float | None) -> Validity:
    """Run every check on a summarised point."""
    checks = _checks(point, largest_gap_s)
    verdict = max((c.status for c in checks), key=_ORDER.__getitem__, default="pass")
    return Validity(verdict=verdict, checks=checks, saturated=is_saturated(point))
