"""The result schema: what a run measured, as written to JSON and read back by reports and `compare`.

Times are in seconds and energy in joules (base units); reports convert for display. Offsets named
`*_at_s` count from the start of their load point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

RESULT_VERSION = 1
Phase = Literal["warmup", "measure", "cooldown"]
TokenSource = Literal["usage", "tokenizer", "chunks"]
Verdict = Literal["pass", "warn", "fail"]


class RequestRecord(BaseModel):
    """One request as the client saw it."""

    index: int
    point: int
    model: str
    service_tier: str | None = None  # the OpenAI service_tier asked for; None when none was sent
    response_service_tier: str | None = None  # the service_tier the server's chunks named, if any
    phase: Phase
    scheduled_at_s: float  # when the schedule said to send it
    dispatched_at_s: float  # when the scheduler got to it (late when the client lags)
    sent_at_s: float  # when it went out (later than dispatched while a concurrency cap holds it)
    first_token_at_s: float | None = None  # first chunk with non-empty content, reasoning or tool calls
    end_at_s: float | None = None  # last token chunk (not the usage chunk or [DONE])
    itl_s: list[float] = Field(default_factory=list)  # gaps between token chunks
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    token_source: TokenSource | None = None
    energy_joules: float | None = None  # the server's usage.energy.joules
    energy_source: str | None = None  # nvml, rapl, estimated
    status_code: int | None = None
    error: str | None = None  # a kind: http_4xx, http_5xx, timeout, connection, incomplete_stream
    error_detail: str | None = None

    @property
    def ok(self) -> bool:
        """Answered 200 and streamed to the end."""
        return self.error is None

    @property
    def ttft_s(self) -> float | None:
        """Time to first token from sending."""
        return None if self.first_token_at_s is None else self.first_token_at_s - self.sent_at_s

    @property
    def ttft_from_schedule_s(self) -> float | None:
        """Time to first token from the scheduled send time: includes any client lag or queueing."""
        return None if self.first_token_at_s is None else self.first_token_at_s - self.scheduled_at_s

    @property
    def e2e_s(self) -> float | None:
        """End-to-end latency from sending."""
        return None if self.end_at_s is None else self.end_at_s - self.sent_at_s

    @property
    def e2e_from_schedule_s(self) -> float | None:
        """End-to-end latency from the scheduled send time."""
        return None if self.end_at_s is None else self.end_at_s - self.scheduled_at_s

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (end - first token) / (completion tokens - 1)."""
        if self.first_token_at_s is None or self.end_at_s is None or not self.completion_tokens:
            return None
        if self.completion_tokens < 2:
            return None
        return (self.end_at_s - self.first_token_at_s) / (self.completion_tokens - 1)


class Distribution(BaseModel):
    """Summary of a sample; percentiles are numpy's default (linear) method."""

    count: int
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    p999: float | None = None
    max: float | None = None


class LoadSpec(BaseModel):
    """The load of one point."""

    mode: Literal["open", "closed"]
    arrival: Literal["constant", "poisson", "gamma"] | None = None  # open loop only
    rate: float | None = None  # requests per second, open loop
    burstiness: float | None = None  # gamma shape; 1 is Poisson, < 1 burstier
    concurrency: int | None = None  # closed loop: fixed; open loop: an optional cap

    @property
    def label(self) -> str:
        """Short name of the point for tables and plots."""
        if self.mode == "closed":
            return f"c={self.concurrency}"
        cap = f" cap {self.concurrency}" if self.concurrency else ""
        shape = f"({self.burstiness:g})" if self.arrival == "gamma" else ""
        return f"{self.rate:g} req/s {self.arrival}{shape}{cap}"

    @property
    def offered(self) -> float:
        """The x value of the point on load plots: the rate, or the concurrency of a closed loop."""
        return float(self.rate if self.mode == "open" else self.concurrency)


class TokenCounts(BaseModel):
    """Tokens of every request of a point (warm-up and cool-down too), by the client and by the server."""

    client_prompt: int
    client_completion: int
    sources: dict[str, int]  # requests per token source
    server_prompt: int | None = None  # counter deltas from /metrics over the whole point
    server_completion: int | None = None
    match: bool | None = None  # both server counts equal the client's


class EnergySummary(BaseModel):
    """Energy of a point, from the server's metered-energy counter read during the run."""

    source: str  # the meter's source label; "estimated" means a model, not a measurement
    window_s: float  # the measured window (warm-up and cool-down excluded)
    metered_joules: float  # over the window, counters interpolated at its edges
    mean_watts: float
    window_output_tokens: float  # server token counter over the same window
    window_total_tokens: float
    joules_per_output_token: float | None = None
    joules_per_total_token: float | None = None
    idle_watts: float | None = None  # mean of the idle measurements before and after the sweep
    joules_per_output_token_above_idle: float | None = None
    marginal_joules_per_output_token: float | None = None  # vs the previous point: ΔW / Δ(tok/s)
    request_joules: Distribution  # the server's per-request usage.energy, measured requests
    attributed_joules: float  # Σ usage.energy.joules over every request of the point
    server_attributed_joules: float | None = None  # the server's attributed-energy counter delta
    attribution_match: bool | None = None  # within 1 %
    at_saturation: bool = False  # taken at a saturated point: not the cost of serving the offered load


class GroupSummary(BaseModel):
    """Figures of one group of a point's measured requests, from their own records.

    Energy is the sum of the requests' `usage.energy.joules`, over the output tokens of the requests
    that carried it; rates are over the point's `answer_span_s`.
    """

    requests: int
    ok: int
    output_tokens: int
    request_throughput: float | None = None  # successful requests / the point's answer span
    output_throughput: float | None = None
    ttft_s: Distribution
    itl_s: Distribution
    e2e_s: Distribution
    joules: float | None = None
    joules_per_output_token: float | None = None
    at_saturation: bool = False  # the point was saturated: these figures were taken there


class AdapterSummary(GroupSummary):
    """Per `model` name (base model or adapter), measured requests."""

    model: str


class TierSummary(GroupSummary):
    """Per OpenAI `service_tier` asked for, measured requests."""

    service_tier: str
    response_tiers: dict[str, int] = Field(default_factory=dict)  # tiers the server named, "none" if none


class Check(BaseModel):
    """One validity check of a point."""

    name: str
    status: Verdict
    value: float | None = None
    limit: float | None = None
    detail: str = ""


class Validity(BaseModel):
    """The worst of the checks; a failed or saturated point is kept out of fronts and searches."""

    verdict: Verdict
    checks: list[Check]
    saturated: bool = False  # open loop: answered well below the offered rate (see loadtest.saturation)


class PointResult(BaseModel):
    """Aggregates of one load point over its measured window."""

    index: int
    load: LoadSpec
    duration_s: float  # first send to last answer, whole point
    window_s: float  # the measured window
    requests: int  # every request of the point
    measured: int  # requests scheduled inside the window
    ok: int  # measured and successful
    errors: dict[str, int]  # measured requests, by kind
    offered_rps: float | None = None  # open loop: measured requests / window, the rate really scheduled
    answer_span_s: float | None = None  # the time the measured requests took to be answered (>= window)
    request_throughput: float  # successful measured requests / answer span: the rate they were answered at
    output_throughput: float  # output tokens of successful measured requests / answer span
    total_token_throughput: float
    ttft_s: Distribution
    ttft_from_schedule_s: Distribution
    itl_s: Distribution
    tpot_s: Distribution
    e2e_s: Distribution
    e2e_from_schedule_s: Distribution
    schedule_lag_s: Distribution  # dispatched - scheduled: the client's own lateness
    queue_wait_s: Distribution  # sent - dispatched: waiting for a slot under a concurrency cap
    client_cpu_fraction: float  # CPU time of the client process / window, in cores
    goodput: float | None = None  # requests/s meeting every per-request SLO
    slo_met: bool | None = None  # every SLO percentile within its limit
    tokens: TokenCounts
    energy: EnergySummary | None = None
    adapters: list[AdapterSummary]
    tiers: list[TierSummary] = Field(default_factory=list)  # only when requests asked for a service tier
    validity: Validity


class RunResult(BaseModel):
    """One run: its configuration, environment, idle power, points and what was found among them."""

    version: int = RESULT_VERSION
    created: str
    config: dict
    environment: dict
    slos: dict[str, float] = Field(default_factory=dict)  # e.g. {"ttft_p90": 0.5}
    idle_watts_before: float | None = None
    idle_watts_after: float | None = None
    points: list[PointResult]
    pareto: list[int] = Field(default_factory=list)  # valid unsaturated points on the J/token-p99 front
    best: int | None = None  # the valid unsaturated point with the lowest J/token that meets the SLOs
    stopped_because: str | None = None  # why a sweep ended before its last point
    requests: list[RequestRecord] | None = None  # per-request records, when asked for


def energy_field(name: str) -> Callable[[PointResult], float | str | None]:
    """A reader of one `EnergySummary` field of a point; it reads None where the point has no energy."""
    return lambda point: None if point.energy is None else getattr(point.energy, name)
