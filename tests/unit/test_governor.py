"""The SLO governor's policy, and the histogram quantiles it reads the SLOs from."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry

from server.observability.metrics import LATENCY_BUCKETS_S, ServerMetrics
from server.outcome import RequestRecord, Status
from server.policy.admission import AdmissionController, EngineLoad
from server.policy.governor import MIN_SAMPLES, NARROW_AT, WIDEN_BELOW, WINDOW_SHARE_OF_TTFT, Governor, decide
from server.policy.latency import LatencyTracker, quantile

SLO = (0.5, 0.05)  # TTFT p90, ITL p90 (seconds)
RANGE = (8, 64)


def step(ttft: float | None, itl: float | None, window_s: float = 0.0, max_running: int = 64):
    return decide(ttft, itl, slo=SLO, window_s=window_s, max_running=max_running, running_range=RANGE)


def test_slack_widens_up_to_its_share_of_the_ttft_budget() -> None:
    window, running = 0.0, 32
    for _ in range(50):
        decision = step(0.1, 0.01, window, running)
        window, running = decision.window_s, decision.max_running
    assert decision.reason in {"slack", "steady"}
    assert window == WINDOW_SHARE_OF_TTFT * SLO[0]  # on its bound exactly, not a float sum short of it
    assert running == RANGE[1]
    assert step(0.1, 0.01, window, running).action == "hold"


def test_a_halved_window_widens_back_to_its_bound() -> None:
    window = step(0.1, 0.01, window_s=WINDOW_SHARE_OF_TTFT * SLO[0] / 2 - 0.0123).window_s
    for _ in range(20):
        window = step(0.1, 0.01, window).window_s
    assert window == WINDOW_SHARE_OF_TTFT * SLO[0]


@pytest.mark.parametrize(
    ("ttft", "itl", "reason"),
    [
        (0.6, 0.01, "slo_violated"),
        (0.1, 0.06, "slo_violated"),
        (SLO[0] * (NARROW_AT + 0.05), 0.01, "slo_at_risk"),
        (0.1, SLO[1] * (NARROW_AT + 0.05), "slo_at_risk"),
    ],
)
def test_risk_narrows(ttft: float, itl: float, reason: str) -> None:
    decision = step(ttft, itl, window_s=0.16, max_running=64)
    assert (decision.action, decision.reason) == ("narrow", reason)
    assert decision.window_s < 0.16
    assert RANGE[0] <= decision.max_running < 64


def test_between_the_thresholds_and_without_data_it_holds() -> None:
    middle = SLO[0] * (WIDEN_BELOW + NARROW_AT) / 2
    assert step(middle, 0.01, 0.1).action == "hold"
    assert step(None, None, 0.1).reason == "no_data"


def test_concurrency_never_leaves_its_range() -> None:
    decision = step(5.0, 5.0, 0.2, max_running=RANGE[0])
    assert decision.max_running == RANGE[0]


def test_quantile_interpolates_within_a_bucket_like_prometheus() -> None:
    buckets = [(0.1, 50.0), (0.2, 90.0), (0.4, 100.0), (math.inf, 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.9, buckets) == pytest.approx(0.2)
    assert quantile(0.95, buckets) == pytest.approx(0.3)
    assert quantile(0.9, [(0.1, 0.0), (math.inf, 0.0)]) is None
    assert quantile(0.99, [(0.1, 1.0), (math.inf, 100.0)]) == 0.1  # in +Inf: the highest finite bound


def ended(tier: str, ttft_s: float) -> RequestRecord:
    return RequestRecord(adapter="base", tier=tier, status=Status.OK, ttft_s=ttft_s)


def governor_on(admission: AdmissionController) -> tuple[Governor, LatencyTracker, CollectorRegistry]:
    latency, registry = LatencyTracker(LATENCY_BUCKETS_S), CollectorRegistry()
    metrics = ServerMetrics(registry, "estimated", ["cpu"])
    governor = Governor(admission, latency, metrics, lambda: None, slo_ttft_s=SLO[0], slo_itl_s=SLO[1])
    return governor, latency, registry


def test_flex_latency_does_not_count_against_the_slos() -> None:
    """Flex requests wait in their lane by design: seconds of TTFT there are no SLO risk."""
    governor, latency, _ = governor_on(AdmissionController(64, 64, EngineLoad(32)))
    governor.step()
    for _ in range(MIN_SAMPLES):
        latency.record(ended("default", 0.02))
        latency.record(ended("flex", 5.0))
    assert governor.step().reason == "slack"
    for _ in range(MIN_SAMPLES):
        latency.record(ended("priority", 5.0))
    assert governor.step().reason == "slo_violated"


def test_a_step_reads_the_server_latency_and_applies_and_exports_its_decision() -> None:
    """The loop's own step, on real admission, tracker and metrics objects: slack widens the window."""
    admission = AdmissionController(64, 64, EngineLoad(32))
    governor, latency, registry = governor_on(admission)
    assert governor.step().reason == "no_data"
    for _ in range(MIN_SAMPLES):
        latency.record(ended("default", 0.02))
    decision = governor.step()
    assert (decision.action, decision.reason) == ("widen", "slack")
    assert admission.batch_window_s == decision.window_s > 0
    assert admission.max_running == decision.max_running
    assert registry.get_sample_value("wattserve_governor_batch_window_seconds") == decision.window_s
