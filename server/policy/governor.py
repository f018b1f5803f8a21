"""The SLO governor (`--energy-policy slo`): batch more while the latency SLOs have slack, less at risk.

Two levers, both without privileges: how long a default request that finds the engine nearly idle may
wait for companions (the admission batching window), and how many requests may run at once. Every
`period_s` it reads the p90 time to first token and inter-token latency over the last `lookback_s` from
the server's own latency tracker (governed tiers only: flex requests wait in their lane by design and
have no latency objective), and the live J/token from the energy summary, then:
- p90 over an SLO: the window closes and concurrency steps back (`slo_violated`);
- p90 above `NARROW_AT` of an SLO: the window halves, concurrency steps back (`slo_at_risk`);
- p90 below `WIDEN_BELOW` of every SLO: the window grows by a step, concurrency returns (`slack`).
The window never exceeds `WINDOW_SHARE_OF_TTFT` of the TTFT SLO, so a request waiting its full window
still has 40 % of its budget for its prefill. Decisions are logged and exported (`wattserve_governor_*`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from server.policy.admission import AdmissionController
from server.policy.latency import Buckets, LatencyTracker, quantile

logger = logging.getLogger(__name__)

NARROW_AT = 0.85
WIDEN_BELOW = 0.6
WINDOW_SHARE_OF_TTFT = WIDEN_BELOW  # past this the p90 alone stops the widening anyway
WINDOW_STEPS = 8  # the window grows in this many steps up to its maximum
MIN_SAMPLES = 20  # fewer first tokens in the lookback: too little to judge, hold


class DecisionExporter(Protocol):
    """Where decisions are exported (the Prometheus metrics)."""

    def governor_decided(self, action: str, reason: str, window_s: float, max_running: int) -> None:
        """One decision."""
        ...


@dataclass(frozen=True)
class Decision:
    """What the governor chose, and why."""

    window_s: float
    max_running: int
    action: str  # widen, narrow, hold
    reason: str  # slack, slo_at_risk, slo_violated, no_data, steady


def decide(
    ttft_p90_s: float | None,
    itl_p90_s: float | None,
    *,
    slo: tuple[float, float],
    window_s: float,
    max_running: int,
    running_range: tuple[int, int],
) -> Decision:
    """One step of the policy (pure, so it can be tested on its own)."""
    if ttft_p90_s is None:
        return Decision(window_s, max_running, "hold", "no_data")
    slo_ttft_s, slo_itl_s = slo
    risk = max(ttft_p90_s / slo_ttft_s, (itl_p90_s or 0.0) / slo_itl_s)
    low, high = running_range
    max_window_s = WINDOW_SHARE_OF_TTFT * slo_ttft_s
    if risk > 1.0:
        return Decision(0.0, max(low, max_running * 3 // 4), "narrow", "slo_violated")
    if risk > NARROW_AT:
        return Decision(window_s / 2, max(low, max_running * 7 // 8), "narrow", "slo_at_risk")
    if risk < WIDEN_BELOW and (window_s < max_window_s or max_running < high):
        # Whole steps, so that the window lands on its bound instead of creeping below it by float sums.
        step_s = max_window_s / WINDOW_STEPS
        widened = min(max_window_s, (round(window_s / step_s) + 1) * step_s)
        return Decision(widened, min(high, max_running + max(1, high // 8)), "widen", "slack")
    return Decision(window_s, max_running, "hold", "steady")


class Governor:
    """Runs `decide` every period against the live latency and applies it to admission."""

    def __init__(
        self,
        admission: AdmissionController,
        latency: LatencyTracker,
        exporter: DecisionExporter,
        joules_per_token: Callable[[], float | None],
        *,
        slo_ttft_s: float,
        slo_itl_s: float,
        period_s: float = 2.0,
        lookback_s: float = 20.0,
    ) -> None:
        self._admission = admission
        self._latency = latency
        self._exporter = exporter
        self._joules_per_token = joules_per_token
        self._slo = (slo_ttft_s, slo_itl_s)
        self._period_s = period_s
        self._lookback_s = lookback_s
        self._running_range = (max(1, admission.load.max_num_seqs // 4), admission.max_running)
        self._history: deque[tuple[float, Buckets, Buckets]] = deque()
        admission.batch_target = max(2, admission.load.max_num_seqs // 4)

    def _p90s(self) -> tuple[float | None, float | None]:
        now = time.monotonic()
        ttft, itl = self._latency.snapshot()
        self._history.append((now, ttft, itl))
        while self._history[0][0] < now - self._lookback_s:
            self._history.popleft()
        _, ttft_then, itl_then = self._history[0]
        ttft_delta = _delta(ttft, ttft_then)
        if not ttft_delta or ttft_delta[-1][1] < MIN_SAMPLES:
            return None, None
        return quantile(0.9, ttft_delta), quantile(0.9, _delta(itl, itl_then))

    def step(self) -> Decision:
        """Read the p90s, decide, apply, export."""
        ttft_p90, itl_p90 = self._p90s()
        admission = self._admission
        decision = decide(
            ttft_p90,
            itl_p90,
            slo=self._slo,
            window_s=admission.batch_window_s,
            max_running=admission.max_running,
            running_range=self._running_range,
        )
        if decision.action != "hold":
            admission.batch_window_s = decision.window_s
            admission.set_max_running(decision.max_running)
            logger.info(
                "governor: %s (%s): window %.0f ms, %d at once; p90 TTFT %s, ITL %s; J/token %s",
                decision.action,
                decision.reason,
                decision.window_s * 1000,
                decision.max_running,
                _ms(ttft_p90),
                _ms(itl_p90),
                self._joules_per_token(),
            )
        self._exporter.governor_decided(
            decision.action, decision.reason, decision.window_s, decision.max_running
        )
        return decision

    async def run(self) -> None:
        """Decide every period until cancelled."""
        while True:
            await asyncio.sleep(self._period_s)
            self.step()


def _delta(now: Buckets, then: Buckets) -> Buckets:
    before = dict(then)
    return [(bound, count - before.get(bound, 0.0)) for bound, count in now]


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"
