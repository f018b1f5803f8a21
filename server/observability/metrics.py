"""Every wattserve Prometheus metric, on an injected registry; the hot path only calls inc/observe/set.

Base units throughout (seconds, joules, grams). Label values come from bounded sets: `adapter` is "base"
or a name the adapter registry holds; `tier` comes from the tier table (`server.tiers`), `phase` and
`status` from enums.
"""

from __future__ import annotations

import enum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from server.energy.ledger import EnergyAccount, EnergyWindow
from server.observability.histograms import BulkHistogram
from server.observability.router_metrics import RouterMetrics
from server.outcome import RequestRecord, Status
from server.tiers import TIERS

BASE_LABEL = "base"
LATENCY_BUCKETS_S = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)
JOULE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 50, 100, 500, 1000, 5000)
FLEX_WAIT_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)
JOULE_PER_TOKEN_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Phase(str, enum.Enum):
    """Which part of generation a token's energy belongs to."""

    PREFILL = "prefill"
    DECODE = "decode"


class ServerMetrics:
    """Defines every metric once; records finished requests and the energy ledger's windows."""

    def __init__(self, registry: CollectorRegistry, energy_source: str, devices: list[str]) -> None:
        labels = ["adapter", "tier"]

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=registry)

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, [*labels, *extra], registry=registry)

        self.ttft = histogram(
            "wattserve_time_to_first_token_seconds", "Time to first token.", LATENCY_BUCKETS_S
        )
        self.itl = BulkHistogram(
            "wattserve_inter_token_latency_seconds",
            "Time between output tokens.",
            labels,
            LATENCY_BUCKETS_S,
            registry,
        )
        self.e2e = histogram(
            "wattserve_e2e_request_latency_seconds",
            "Request latency, arrival to last token.",
            LATENCY_BUCKETS_S,
        )
        self.queue = histogram(
            "wattserve_request_queue_time_seconds",
            "Time from arrival until the engine scheduled the request.",
            LATENCY_BUCKETS_S,
        )
        self.request_joules = histogram(
            "wattserve_request_energy_joules", "Energy attributed to one request.", JOULE_BUCKETS
        )
        self.request_dynamic_joules = histogram(
            "wattserve_request_dynamic_energy_joules",
            "Energy one request added above the idle floor.",
            JOULE_BUCKETS,
        )
        self.joules_per_token = histogram(
            "wattserve_request_joules_per_output_token",
            "A request's energy over its output tokens.",
            JOULE_PER_TOKEN_BUCKETS,
        )
        self.requests = counter("wattserve_requests", "Finished requests.", ("status",))
        self.prompt_tokens = counter("wattserve_prompt_tokens", "Prompt tokens processed.")
        self.generation_tokens = counter("wattserve_generation_tokens", "Output tokens generated.")
        self.energy = counter(
            "wattserve_energy_joules", "Energy attributed to requests (static + dynamic).", ("phase",)
        )
        self.dynamic_energy = counter(
            "wattserve_dynamic_energy_joules", "Energy attributed to requests above the idle floor."
        )
        self.co2e = counter("wattserve_co2e_grams", "Grams CO2e of the attributed energy.")
        self.idle_energy = Counter(
            "wattserve_idle_energy_joules",
            "Metered energy of intervals in which the engine held no request and ran no step.",
            registry=registry,
        )
        self.metered_energy = Counter(
            "wattserve_metered_energy_joules",
            "All metered energy (attributed + idle).",
            ["source"],
            registry=registry,
        )
        self.power = Gauge(
            "wattserve_power_watts",
            "Power over the last sampling interval, per device.",
            ["device", "source"],
            registry=registry,
        )
        self.idle_floor = Gauge(
            "wattserve_idle_floor_watts",
            "Power with the server up and no work, learnt from idle stretches (0 until measured).",
            ["source"],
            registry=registry,
        )
        self.running = Gauge(
            "wattserve_requests_running", "Requests in the engine with output started.", registry=registry
        )
        self.waiting = Gauge(
            "wattserve_requests_waiting", "Admitted requests without a first token yet.", registry=registry
        )
        self.queued = Gauge(
            "wattserve_requests_queued",
            "Requests waiting for admission (429 once the queue is full).",
            registry=registry,
        )
        self.admitted = Gauge(
            "wattserve_requests_admitted",
            "Requests holding an admission slot (in the engine or on their way to it).",
            registry=registry,
        )
        self.awaiting_client = Gauge(
            "wattserve_responses_awaiting_client",
            "Responses the engine has finished (their admission slot given back) not yet delivered to the "
            "client: slow readers.",
            registry=registry,
        )
        self.flex_wait = Histogram(
            "wattserve_flex_lane_wait_seconds",
            "Time flex requests waited in the flex lane before admission.",
            buckets=FLEX_WAIT_BUCKETS_S,
            registry=registry,
        )
        self.in_flex_lane = Gauge(
            "wattserve_requests_in_flex_lane", "Flex requests waiting in the flex lane.", registry=registry
        )
        # A gauge: the sum is signed (work held past its wait bound may run on a dirtier grid).
        self.co2e_avoided = Gauge(
            "wattserve_co2e_avoided_grams",
            "Grams CO2e avoided since start by holding flex work while the grid was dirtier.",
            labels,
            registry=registry,
        )
        self.engine_healthy = Gauge(
            "wattserve_engine_healthy",
            "1 while the engine is up and has not died, else 0 (with --keep-alive-on-engine-death the "
            "process, and so its scrape, outlive the engine).",
            registry=registry,
        )
        self.grid_intensity = Gauge(
            "wattserve_grid_intensity_grams_per_kwh",
            "Grid carbon intensity now, gCO2e/kWh.",
            registry=registry,
        )
        self.governor_decisions = Counter(
            "wattserve_governor_decisions",
            "Decisions of the SLO governor.",
            ["action", "reason"],
            registry=registry,
        )
        self.governor_window = Gauge(
            "wattserve_governor_batch_window_seconds",
            "How long a default request may wait for companions when the engine is nearly idle.",
            registry=registry,
        )
        self.governor_max_running = Gauge(
            "wattserve_governor_max_running", "Requests the governor lets run at once.", registry=registry
        )
        self.router = RouterMetrics(registry)  # what routers and autoscalers read (router_metrics.py)
        self.meter_info = Gauge(
            "wattserve_energy_meter_info", "The energy meter in use (value 1).", ["source"], registry=registry
        )
        self.source = energy_source
        self._devices = devices
        self.meter_info.labels(source=energy_source).set(1)
        self._metered = self.metered_energy.labels(source=energy_source)
        self._floor = self.idle_floor.labels(source=energy_source)
        self._power = [self.power.labels(device=d, source=energy_source) for d in devices]

    def use_meter(self, source: str, devices: list[str]) -> None:
        """Label the meter's series anew: the engine's workers, known once it runs, replaced the meter."""
        for metric in (self.meter_info, self.metered_energy, self.idle_floor):
            metric.remove(self.source)
        for device in self._devices:
            self.power.remove(device, self.source)
        self.source, self._devices = source, devices
        self.meter_info.labels(source=source).set(1)
        self._metered = self.metered_energy.labels(source=source)
        self._floor = self.idle_floor.labels(source=source)
        self._power = [self.power.labels(device=d, source=source) for d in devices]

    def adapter_added(self, adapter: str) -> None:
        """Create an adapter's series up front, so they read 0 before its first request."""
        for tier in TIERS:
            labels = {"adapter": adapter, "tier": tier}
            self.itl.labels(adapter, tier)
            for metric in (
                self.ttft,
                self.e2e,
                self.queue,
                self.request_joules,
                self.request_dynamic_joules,
                self.joules_per_token,
                self.prompt_tokens,
                self.generation_tokens,
                self.co2e,
                self.dynamic_energy,
                self.co2e_avoided,
            ):
                metric.labels(**labels)
            for status in Status:
                self.requests.labels(**labels, status=status.value)
            for phase in Phase:
                self.energy.labels(**labels, phase=phase.value)

    def record(self, record: RequestRecord) -> None:
        """Export one ended request's timing and tokens (only its status, if it never reached the engine)."""
        labels = {"adapter": record.adapter, "tier": record.tier}
        self.requests.labels(**labels, status=record.status.value).inc()
        if not record.reached_engine:  # its energy is settled through the ledger like any other
            return
        self.prompt_tokens.labels(**labels).inc(record.prompt_tokens)
        self.generation_tokens.labels(**labels).inc(record.completion_tokens)
        self.e2e.labels(**labels).observe(record.e2e_s)
        if record.ttft_s is not None:
            self.ttft.labels(**labels).observe(record.ttft_s)
        if record.queue_s is not None:
            self.queue.labels(**labels).observe(record.queue_s)
        if record.itl is not None:
            self.itl.add((record.adapter, record.tier), record.itl)

    def governor_decided(self, action: str, reason: str, window_s: float, max_running: int) -> None:
        """Export one governor decision."""
        self.governor_decisions.labels(action=action, reason=reason).inc()
        self.governor_window.set(window_s)
        self.governor_max_running.set(max_running)

    def export_settled(self, account: EnergyAccount) -> None:
        """Export one request whose energy is final."""
        labels = {"adapter": account.adapter, "tier": account.tier}
        if account.baseline_g_per_j is not None:
            self.co2e_avoided.labels(**labels).inc(account.avoided_grams)
        self.request_joules.labels(**labels).observe(account.joules)
        self.request_dynamic_joules.labels(**labels).observe(account.dynamic_j)
        if account.output_tokens:
            self.joules_per_token.labels(**labels).observe(account.joules / account.output_tokens)

    def export_window(self, window: EnergyWindow) -> None:
        """Export one closed meter interval."""
        for (adapter, tier, phase), share in window.shares.items():
            if share.joules:
                self.energy.labels(adapter=adapter, tier=tier, phase=phase).inc(share.joules)
                self.co2e.labels(adapter=adapter, tier=tier).inc(share.grams)
            if share.dynamic_j:
                self.dynamic_energy.labels(adapter=adapter, tier=tier).inc(share.dynamic_j)
        if window.idle_j:
            self.idle_energy.inc(window.idle_j)
        self._metered.inc(window.metered_j)
        self._floor.set(window.floor_w)

    def export_power(self, watts: list[float]) -> None:
        """Export each device's power over the last interval."""
        for child, value in zip(self._power, watts, strict=True):
            child.set(value)
