"""Turn one load point's request records and scraped counters into its `PointResult` figures."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from loadtest import scrape
from loadtest.results import (
    AdapterSummary,
    Distribution,
    EnergySummary,
    LoadSpec,
    PointResult,
    RequestRecord,
    TierSummary,
    TokenCounts,
)
from loadtest.saturation import answer_stretch
from loadtest.scrape import MetricsSeries
from loadtest.slo import point_meets, request_meets
from loadtest.validity import assess

ATTRIBUTION_TOLERANCE = 0.01


def distribution(values: list[float]) -> Distribution:
    """Mean, max and percentiles with numpy's default (linear) interpolation."""
    if not values:
        return Distribution(count=0)
    array = np.asarray(values, dtype=float)
    p50, p90, p95, p99, p999 = np.percentile(array, [50, 90, 95, 99, 99.9]).tolist()
    return Distribution(
        count=len(values), mean=float(array.mean()), p50=p50, p90=p90, p95=p95, p99=p99, p999=p999,
        max=float(array.max()),
    )  # fmt: skip


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """`numerator / denominator`; None when either is missing or the denominator is zero."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def _values(records: list[RequestRecord], attribute: str) -> list[float]:
    return [value for r in records if (value := getattr(r, attribute)) is not None]


@dataclass(frozen=True)
class PointTiming:
    """Where a point sits on the perf_counter clock the scrapes use."""

    started_at: float  # the point's time zero
    ended_at: float  # after its last answer
    window_start_s: float  # the measured window, from time zero
    window_end_s: float
    cpu_seconds: float  # the client process's CPU time during the point


def _token_counts(records: list[RequestRecord], series: MetricsSeries) -> TokenCounts:
    prompt = sum(r.prompt_tokens or 0 for r in records)
    completion = sum(r.completion_tokens or 0 for r in records)
    sources = Counter(r.token_source or "none" for r in records)
    counts = TokenCounts(client_prompt=prompt, client_completion=completion, sources=dict(sources))
    for prompt_name, completion_name in (
        (scrape.PROMPT_TOKENS, scrape.GENERATION_TOKENS),
        (scrape.VLLM_PROMPT_TOKENS, scrape.VLLM_GENERATION_TOKENS),
    ):
        server_prompt, server_completion = (
            series.total_delta(prompt_name),
            series.total_delta(completion_name),
        )
        if server_prompt is not None and server_completion is not None:
            counts.server_prompt, counts.server_completion = round(server_prompt), round(server_completion)
            counts.match = counts.server_prompt == prompt and counts.server_completion == completion
            break
    return counts


def _energy(
    records: list[RequestRecord], measured: list[RequestRecord], series: MetricsSeries, timing: PointTiming
) -> EnergySummary | None:
    start, end = timing.started_at + timing.window_start_s, timing.started_at + timing.window_end_s
    metered = series.delta(scrape.METERED, start, end)
    if metered is None or series.meter_source is None:
        return None
    # vLLM's token counters move every engine step, wattserve's at request end: the former fit a window.
    output_name = (
        scrape.VLLM_GENERATION_TOKENS
        if series.has(scrape.VLLM_GENERATION_TOKENS)
        else scrape.GENERATION_TOKENS
    )
    prompt_name = scrape.VLLM_PROMPT_TOKENS if series.has(scrape.VLLM_PROMPT_TOKENS) else scrape.PROMPT_TOKENS
    output_tokens = series.delta(output_name, start, end) or 0.0
    total_tokens = output_tokens + (series.delta(prompt_name, start, end) or 0.0)
    window_s = end - start
    attributed = sum(r.energy_joules or 0.0 for r in records)
    server_attributed = series.total_delta(scrape.ATTRIBUTED)
    match = None
    if server_attributed is not None:
        match = abs(attributed - server_attributed) <= ATTRIBUTION_TOLERANCE * max(server_attributed, 1e-9)
    return EnergySummary(
        source=series.meter_source,
        window_s=window_s,
        metered_joules=metered,
        mean_watts=metered / window_s,
        window_output_tokens=output_tokens,
        window_total_tokens=total_tokens,
        joules_per_output_token=metered / output_tokens if output_tokens else None,
        joules_per_total_token=metered / total_tokens if total_tokens else None,
        request_joules=distribution(_values(measured, "energy_joules")),
        attributed_joules=attributed,
        server_attributed_joules=server_attributed,
        attribution_match=match,
    )


def _group_figures(records: list[RequestRecord], span_s: float) -> dict:
    """The `GroupSummary` fields of some measured requests, from their own records."""
    ok = [r for r in records if r.ok]
    tokens = sum(r.completion_tokens or 0 for r in ok)
    # Only requests that carried usage.energy count towards J/token, so a mix of servers or a request
    # without energy does not dilute it.
    metered = [r for r in ok if r.energy_joules is not None]
    joules = sum(r.energy_joules or 0.0 for r in metered)
    metered_tokens = sum(r.completion_tokens or 0 for r in metered)
    return {
        "requests": len(records),
        "ok": len(ok),
        "output_tokens": tokens,
        "request_throughput": len(ok) / span_s,
        "output_throughput": tokens / span_s,
        "ttft_s": distribution(_values(ok, "ttft_s")),
        "itl_s": distribution([gap for r in ok for gap in r.itl_s]),
        "e2e_s": distribution(_values(ok, "e2e_s")),
        "joules": joules if metered else None,
        "joules_per_output_token": joules / metered_tokens if metered and metered_tokens else None,
    }


def _adapters(measured: list[RequestRecord], span_s: float) -> list[AdapterSummary]:
    by_model: dict[str, list[RequestRecord]] = defaultdict(list)
    for record in measured:
        by_model[record.model].append(record)
    return [
        AdapterSummary(model=model, **_group_figures(records, span_s))
        for model, records in sorted(by_model.items())
    ]


def _tiers(measured: list[RequestRecord], span_s: float) -> list[TierSummary]:
    by_tier: dict[str, list[RequestRecord]] = defaultdict(list)
    for record in measured:
        if record.service_tier is not None:
            by_tier[record.service_tier].append(record)
    return [
        TierSummary(
            service_tier=tier,
            response_tiers=dict(Counter(r.response_service_tier or "none" for r in records if r.ok)),
            **_group_figures(records, span_s),
        )
        for tier, records in sorted(by_tier.items())
    ]


def summarize_point(
    index: int,
    load: LoadSpec,
    records: list[RequestRecord],
    series: MetricsSeries,
    timing: PointTiming,
    *,
    slos: dict[str, float],
) -> PointResult:
    """Every figure of one point; the measured window's requests are those scheduled inside it."""
    measured = [r for r in records if r.phase == "measure"]
    ok = [r for r in measured if r.ok]
    window_s = timing.window_end_s - timing.window_start_s
    # Rates are over the time the window's requests took to be answered: the window itself for a server
    # that keeps up, however long each answer takes, and longer for one that falls behind.
    span_s = window_s * answer_stretch(ok)
    output_tokens = sum(r.completion_tokens or 0 for r in ok)
    prompt_tokens = sum(r.prompt_tokens or 0 for r in ok)
    distributions = {
        "ttft": distribution(_values(ok, "ttft_s")),
        "itl": distribution([gap for r in ok for gap in r.itl_s]),
        "tpot": distribution(_values(ok, "tpot_s")),
        "e2e": distribution(_values(ok, "e2e_s")),
    }
    tokens = _token_counts(records, series)
    energy = _energy(records, measured, series, timing)
    client_cpu = timing.cpu_seconds / (timing.ended_at - timing.started_at)
    window = (timing.started_at + timing.window_start_s, timing.started_at + timing.window_end_s)
    point = PointResult(
        index=index,
        load=load,
        duration_s=timing.ended_at - timing.started_at,
        window_s=window_s,
        requests=len(records),
        measured=len(measured),
        ok=len(ok),
        errors=dict(Counter(r.error for r in measured if r.error)),
        offered_rps=len(measured) / window_s if load.mode == "open" else None,
        answer_span_s=span_s,
        request_throughput=len(ok) / span_s,
        output_throughput=output_tokens / span_s,
        total_token_throughput=(output_tokens + prompt_tokens) / span_s,
        ttft_s=distributions["ttft"],
        ttft_from_schedule_s=distribution(_values(ok, "ttft_from_schedule_s")),
        itl_s=distributions["itl"],
        tpot_s=distributions["tpot"],
        e2e_s=distributions["e2e"],
        e2e_from_schedule_s=distribution(_values(ok, "e2e_from_schedule_s")),
        schedule_lag_s=distribution([r.dispatched_at_s - r.scheduled_at_s for r in records]),
        queue_wait_s=distribution([r.sent_at_s - r.dispatched_at_s for r in records]),
        client_cpu_fraction=client_cpu,
        goodput=sum(request_meets(r, slos) for r in measured) / span_s if slos else None,
        slo_met=point_meets(distributions, slos) if slos else None,
        tokens=tokens,
        energy=energy,
        adapters=_adapters(measured, span_s),
        tiers=_tiers(measured, span_s),
        validity={"verdict": "pass", "checks": []},
    )
    point.validity = assess(point, records, series.largest_gap(*window))
    if point.validity.saturated:
        _flag_saturated(point)
    return point


def _flag_saturated(point: PointResult) -> None:
    """Say next to every J/token figure of a point that it was taken at saturation."""
    if point.energy is not None:
        point.energy.at_saturation = True
    for group in (*point.adapters, *point.tiers):
        group.at_saturation = True
