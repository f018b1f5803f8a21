"""Read the target's Prometheus `/metrics` during a run, as time series of the counters the report needs.

The metric names below are the contract with the server (a test pins them against wattserve's own
definitions). wattserve's energy metrics light the energy figures up; vLLM's token counters alone still
give token reconciliation against `vllm serve`. Only the lines of these metrics are handed to
prometheus-client's parser: a vLLM `/metrics` page is large and the client's CPU is the scarce resource.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import defaultdict
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

METERED = "wattserve_metered_energy_joules_total"  # label source
ATTRIBUTED = "wattserve_energy_joules_total"  # labels adapter, phase
IDLE = "wattserve_idle_energy_joules_total"
PROMPT_TOKENS = "wattserve_prompt_tokens_total"  # label adapter
GENERATION_TOKENS = "wattserve_generation_tokens_total"  # label adapter
POWER = "wattserve_power_watts"  # labels device, source
VLLM_PROMPT_TOKENS = "vllm:prompt_tokens_total"
VLLM_GENERATION_TOKENS = "vllm:generation_tokens_total"
SAMPLES = (METERED, ATTRIBUTED, IDLE, PROMPT_TOKENS, GENERATION_TOKENS, POWER, VLLM_PROMPT_TOKENS,
           VLLM_GENERATION_TOKENS)  # fmt: skip
SCRAPE_TIMEOUT = aiohttp.ClientTimeout(total=30)
_PREFIXES = tuple(name.removesuffix("_total") for name in SAMPLES)


@dataclass
class Scrape:
    """One read of `/metrics` at `at` (perf_counter seconds): each sample summed over its labels."""

    at: float
    totals: dict[str, float]
    by_adapter: dict[str, dict[str, float]] = field(default_factory=dict)  # sample -> adapter -> value
    meter_source: str | None = None


def _wanted(line: str) -> bool:
    if line.startswith("# "):  # "# HELP name ..." and "# TYPE name ..."
        parts = line.split(" ", 3)
        return len(parts) > 2 and parts[2].startswith(_PREFIXES)
    return line.startswith(_PREFIXES)


def parse_metrics(text: str, at: float) -> Scrape:
    """The samples this harness reads, from a Prometheus text page."""
    wanted = "\n".join(line for line in text.splitlines() if _wanted(line))
    totals: dict[str, float] = defaultdict(float)
    by_adapter: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    source = None
    for family in text_string_to_metric_families(wanted + "\n"):
        for sample in family.samples:
            if sample.name not in SAMPLES:
                continue
            totals[sample.name] += sample.value
            if "adapter" in sample.labels:
                by_adapter[sample.name][sample.labels["adapter"]] += sample.value
            if sample.name == METERED:
                source = sample.labels.get("source")
    return Scrape(at, dict(totals), {k: dict(v) for k, v in by_adapter.items()}, source)


class MetricsSeries:
    """Scrapes in time order, with counter values interpolated between them."""

    def __init__(self) -> None:
        self.scrapes: list[Scrape] = []

    def add(self, scrape: Scrape) -> None:
        """Append a scrape (they arrive in time order)."""
        self.scrapes.append(scrape)

    def has(self, name: str) -> bool:
        """Whether the target exposes this sample."""
        return any(name in scrape.totals for scrape in self.scrapes)

    def value_at(self, name: str, at: float) -> float | None:
        """Linear interpolation of a counter at `at`; None outside the scraped span."""
        points = [(s.at, s.totals[name]) for s in self.scrapes if name in s.totals]
        if not points or not points[0][0] <= at <= points[-1][0]:
            return None
        times = [t for t, _ in points]
        right = bisect.bisect_left(times, at)
        if times[right] == at:
            return points[right][1]
        (t0, v0), (t1, v1) = points[right - 1], points[right]
        return v0 + (v1 - v0) * (at - t0) / (t1 - t0)

    def delta(self, name: str, start: float, end: float) -> float | None:
        """Counter increase between two times, interpolated."""
        first, last = self.value_at(name, start), self.value_at(name, end)
        return None if first is None or last is None else last - first

    def total_delta(self, name: str) -> float | None:
        """Counter increase from the first scrape (before the first send) to the last (after the end)."""
        values = [s.totals[name] for s in self.scrapes if name in s.totals]
        return values[-1] - values[0] if len(values) > 1 else None

    def largest_gap(self, start: float, end: float) -> float | None:
        """The longest time without a scrape inside [start, end]; None when the scrapes do not cover it."""
        times = [s.at for s in self.scrapes]
        if not times or times[0] > start or times[-1] < end:
            return None
        inside = [start, *(t for t in times if start < t < end), end]
        return max(b - a for a, b in zip(inside, inside[1:], strict=False))

    @property
    def meter_source(self) -> str | None:
        """The energy meter's source label, when the target exposes wattserve's energy metrics."""
        return next((s.meter_source for s in reversed(self.scrapes) if s.meter_source), None)


class MetricsProbe:
    """Scrapes `/metrics` every `period_s` into a `MetricsSeries` while a point runs."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, period_s: float = 1.0) -> None:
        self._session = session
        self._url = base_url.rstrip("/") + "/metrics"
        self._period_s = period_s
        self.series = MetricsSeries()
        self._task: asyncio.Task | None = None

    async def scrape(self) -> Scrape | None:
        """One scrape now, added to the series; None when the target answers no metrics."""
        asked_at = time.perf_counter()
        try:
            async with self._session.get(self._url, timeout=SCRAPE_TIMEOUT) as response:
                status, text = response.status, await response.text()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return None
        at = (asked_at + time.perf_counter()) / 2  # the server rendered the page somewhere in between
        if status != 200:
            return None
        scrape = parse_metrics(text, at)
        self.series.add(scrape)
        return scrape

    async def _run(self) -> None:
        next_at = time.perf_counter()
        while True:
            next_at += self._period_s
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            await self.scrape()

    async def __aenter__(self) -> MetricsProbe:
        await self.scrape()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.scrape()
