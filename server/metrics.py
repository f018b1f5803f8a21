"""Every wattserve Prometheus metric, on an injected registry; the hot path only calls inc/observe/set.

Base units throughout (seconds, joules, grams). Label values come from bounded sets: `adapter` is "base"
or a name the adapter registry holds; `phase` and `status` come from the enums below.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BASE_LABEL = "base"
LATENCY_BUCKETS_S = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)
JOULE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 50, 100, 500, 1000, 5000)
JOULE_PER_TOKEN_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Phase(str, enum.Enum):
    """Which part of generation a token's energy belongs to."""

    PREFILL = "prefill"
    DECODE = "decode"


class Status(str, enum.Enum):
    """How a request ended."""

    OK = "ok"
    ABORTED = "aborted"
    ERROR = "error"


@dataclass
class RequestRecord:
    """One finished request, as the exporters need it (collected in generation, exported here)."""

    adapter: str
    status: Status
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None
    e2e_s: float = 0.0
    queue_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    joules: float = 0.0


class ServerMetrics:
    """Defines every metric once and records finished requests and meter readings."""

    def __init__(self, registry: CollectorRegistry, energy_source: str, grams_per_joule: float) -> None:
        adapter = ["adapter"]
        self.ttft = Histogram(
            "wattserve_time_to_first_token_seconds",
            "Time to first token.",
            adapter,
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.itl = Histogram(
            "wattserve_inter_token_latency_seconds",
            "Time between output tokens.",
            adapter,
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.e2e = Histogram(
            "wattserve_e2e_request_latency_seconds",
            "Request latency, arrival to last token.",
            adapter,
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.queue = Histogram(
            "wattserve_request_queue_time_seconds",
            "Time from arrival until the engine scheduled the request.",
            adapter,
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.request_joules = Histogram(
            "wattserve_request_energy_joules",
            "Energy attributed to one request.",
            adapter,
            buckets=JOULE_BUCKETS,
            registry=registry,
        )
        self.joules_per_token = Histogram(
            "wattserve_request_joules_per_output_token",
            "A request's energy over its output tokens.",
            adapter,
            buckets=JOULE_PER_TOKEN_BUCKETS,
            registry=registry,
        )
        self.requests = Counter(
            "wattserve_requests", "Finished requests.", ["adapter", "status"], registry=registry
        )
        self.prompt_tokens = Counter(
            "wattserve_prompt_tokens", "Prompt tokens processed.", adapter, registry=registry
        )
        self.generation_tokens = Counter(
            "wattserve_generation_tokens", "Output tokens generated.", adapter, registry=registry
        )
        self.energy = Counter(
            "wattserve_energy_joules",
            "Energy attributed to requests, by adapter and phase.",
            ["adapter", "phase"],
            registry=registry,
        )
        self.idle_energy = Counter(
            "wattserve_idle_energy_joules",
            "Metered energy of intervals without any token work.",
            registry=registry,
        )
        self.metered_energy = Counter(
            "wattserve_metered_energy_joules",
            "All metered energy (attributed + idle).",
            ["source"],
            registry=registry,
        )
        self.co2e = Counter(
            "wattserve_co2e_grams", "Grams CO2e of the attributed energy.", adapter, registry=registry
        )
        self.power = Gauge(
            "wattserve_power_watts",
            "Power over the last sampling interval, per device.",
            ["device", "source"],
            registry=registry,
        )
        self.running = Gauge(
            "wattserve_requests_running", "Requests in the engine with output started.", registry=registry
        )
        self.waiting = Gauge(
            "wattserve_requests_waiting", "Admitted requests without a first token yet.", registry=registry
        )
        self.meter_info = Gauge(
            "wattserve_energy_meter_info", "The energy meter in use (value 1).", ["source"], registry=registry
        )
        self.source = energy_source
        self._grams_per_joule = grams_per_joule
        self.meter_info.labels(source=energy_source).set(1)
        self.metered_energy.labels(source=energy_source)

    def adapter_added(self, adapter: str) -> None:
        """Create an adapter's series up front, so they read 0 before its first request."""
        for histogram in (
            self.ttft,
            self.itl,
            self.e2e,
            self.queue,
            self.request_joules,
            self.joules_per_token,
        ):
            histogram.labels(adapter=adapter)
        for counter in (self.prompt_tokens, self.generation_tokens, self.co2e):
            counter.labels(adapter=adapter)
        for status in Status:
            self.requests.labels(adapter=adapter, status=status.value)
        for phase in Phase:
            self.energy.labels(adapter=adapter, phase=phase.value)

    def record(self, record: RequestRecord) -> None:
        """Export one finished request."""
        adapter = record.adapter
        self.requests.labels(adapter=adapter, status=record.status.value).inc()
        self.prompt_tokens.labels(adapter=adapter).inc(record.prompt_tokens)
        self.generation_tokens.labels(adapter=adapter).inc(record.completion_tokens)
        self.e2e.labels(adapter=adapter).observe(record.e2e_s)
        if record.ttft_s is not None:
            self.ttft.labels(adapter=adapter).observe(record.ttft_s)
        if record.queue_s is not None:
            self.queue.labels(adapter=adapter).observe(record.queue_s)
        itl = self.itl.labels(adapter=adapter)
        for gap in record.itl_s:
            itl.observe(gap)
        self.request_joules.labels(adapter=adapter).observe(record.joules)
        if record.completion_tokens:
            self.joules_per_token.labels(adapter=adapter).observe(record.joules / record.completion_tokens)

    def energy_attributed(self, by_adapter_phase: dict[tuple[str, str], float], idle_j: float) -> None:
        """Export one closed meter interval."""
        total = idle_j
        for (adapter, phase), joules in by_adapter_phase.items():
            self.energy.labels(adapter=adapter, phase=phase).inc(joules)
            self.co2e.labels(adapter=adapter).inc(joules * self._grams_per_joule)
            total += joules
        if idle_j:
            self.idle_energy.inc(idle_j)
        self.metered_energy.labels(source=self.source).inc(total)

    def power_watts(self, devices: list[str], watts: list[float]) -> None:
        """Export each device's power over the last interval."""
        for device, value in zip(devices, watts, strict=False):
            self.power.labels(device=device, source=self.source).set(value)
