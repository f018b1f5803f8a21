"""Per-request bookkeeping: timestamps and tokens as steps arrive, energy from the ledger when requests end.

Collecting happens here; exporting is `ServerMetrics`' job. Every method runs on the event loop.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from server.energy.carbon import CarbonModel
from server.energy.ledger import EnergyLedger
from server.energy.sampler import EnergySampler, Reading
from server.engine.types import GenerationStep
from server.metrics import RequestRecord, ServerMetrics, Status

WINDOW_S = 60.0


@dataclass(frozen=True)
class EnergyFigures:
    """A request's energy, as `usage.energy` reports it."""

    joules: float
    joules_per_output_token: float | None
    co2e_grams: float
    source: str


@dataclass
class RequestTracker:
    """One engine request's timeline and token counts."""

    request_id: str
    adapter: str
    arrival_s: float = field(default_factory=time.monotonic)
    first_token_s: float | None = None
    last_token_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    queue_s: float | None = None
    finish_reason: str | None = None


class Accounting:
    """Feeds the ledger with each step's tokens and closes each request with its energy and metrics."""

    def __init__(
        self,
        metrics: ServerMetrics,
        ledger: EnergyLedger,
        carbon: CarbonModel,
        source: str,
        devices: list[str],
    ) -> None:
        self.metrics = metrics
        self.ledger = ledger
        self.carbon = carbon
        self.source = source
        self.devices = devices
        self.sampler: EnergySampler | None = None
        self.started_s = time.monotonic()
        self.last_reading: Reading | None = None
        self.power_w: list[float] = [0.0] * len(devices)
        self.tokens_by_adapter: dict[str, int] = {}
        # (monotonic s, attributed J, output tokens) at each reading, for the last-minute J/token.
        self._window: deque[tuple[float, float, int]] = deque()

    @property
    def metering(self) -> bool:
        """Whether a meter feeds the ledger (false with `--energy-meter none`)."""
        return self.sampler is not None

    def on_reading(self, reading: Reading) -> None:
        """Close the ledger interval ending at `reading` and export it (called on the event loop)."""
        now_s, per_device_j = reading
        previous = self.last_reading
        if previous is not None and now_s > previous[0]:
            self.power_w = [
                max(0.0, (j - p) / (now_s - previous[0]))
                for j, p in zip(per_device_j, previous[1], strict=False)
            ]
            self.metrics.power_watts(self.devices, self.power_w)
        if previous is None or now_s >= previous[0]:
            self.last_reading = reading
        attribution = self.ledger.reading(sum(per_device_j))
        if attribution is not None:
            self.metrics.energy_attributed(attribution.by_adapter_phase, attribution.idle_j)
            self._window.append((now_s, self.ledger.attributed_total_j, sum(self.tokens_by_adapter.values())))
            while self._window and self._window[0][0] < now_s - WINDOW_S:
                self._window.popleft()

    def begin(self, request_id: str, adapter: str) -> RequestTracker:
        """Open the books of one engine request."""
        tracker = RequestTracker(request_id, adapter)
        self.ledger.start(request_id, adapter)
        self.metrics.waiting.inc()
        return tracker

    def step(self, tracker: RequestTracker, step: GenerationStep) -> None:
        """Count one engine step's tokens and timestamps."""
        now = time.monotonic()
        tokens = sum(delta.token_count for delta in step.deltas)
        prefill = 0
        if tracker.first_token_s is None and tokens:
            tracker.first_token_s = now
            tracker.prompt_tokens = prefill = step.prompt_token_count
            self.metrics.waiting.dec()
            self.metrics.running.inc()
        elif tracker.last_token_s is not None and tokens:
            tracker.itl_s.append(now - tracker.last_token_s)
        if tokens:
            tracker.last_token_s = now
        tracker.completion_tokens += tokens
        self.tokens_by_adapter[tracker.adapter] = self.tokens_by_adapter.get(tracker.adapter, 0) + tokens
        if step.queue_s is not None:
            tracker.queue_s = step.queue_s
        self.ledger.add_tokens(tracker.request_id, prefill=prefill, decode=tokens)

    async def end(self, trackers: list[RequestTracker], status: Status) -> EnergyFigures | None:
        """Close the books of one HTTP request's engine requests and export them.

        A fresh meter reading is taken on a worker thread first, so the answer carries the energy of
        every token it counts without waiting for the sampler's next tick.
        """
        if not trackers:  # refused before the engine saw it: nothing to meter or record
            return None
        if self.sampler is not None:
            await self.sampler.read_now()
        joules = 0.0
        for tracker in trackers:
            if tracker.first_token_s is None:
                self.metrics.waiting.dec()
            else:
                self.metrics.running.dec()
            account = self.ledger.finish(tracker.request_id)
            end_s = tracker.last_token_s or time.monotonic()
            record = RequestRecord(
                adapter=tracker.adapter,
                status=status,
                prompt_tokens=tracker.prompt_tokens,
                completion_tokens=tracker.completion_tokens,
                ttft_s=None if tracker.first_token_s is None else tracker.first_token_s - tracker.arrival_s,
                e2e_s=end_s - tracker.arrival_s,
                queue_s=tracker.queue_s,
                itl_s=tracker.itl_s,
                joules=account.joules,
            )
            self.metrics.record(record)
            joules += account.joules
        if not self.metering:
            return None
        output_tokens = sum(tracker.completion_tokens for tracker in trackers)
        return EnergyFigures(
            joules=joules,
            joules_per_output_token=joules / output_tokens if output_tokens else None,
            co2e_grams=self.carbon.grams(joules),
            source=self.source,
        )

    def summary(self) -> dict:
        """The `/v1/energy` document: meter, power, totals, idle share, J/token overall and per adapter."""
        ledger = self.ledger
        tokens = sum(self.tokens_by_adapter.values())
        by_adapter: dict[str, dict[str, float | int | None]] = {}
        for (adapter, phase), joules in ledger.attributed_j.items():
            entry = by_adapter.setdefault(
                adapter, {"joules": 0.0, "prefill_joules": 0.0, "decode_joules": 0.0}
            )
            entry["joules"] += joules
            entry[f"{phase}_joules"] += joules
        for adapter, entry in by_adapter.items():
            count = self.tokens_by_adapter.get(adapter, 0)
            entry["output_tokens"] = count
            entry["joules_per_output_token"] = entry["joules"] / count if count else None
        last_minute = None
        if len(self._window) >= 2 and self._window[-1][2] > self._window[0][2]:
            (_, j0, t0), (_, j1, t1) = self._window[0], self._window[-1]
            last_minute = (j1 - j0) / (t1 - t0)
        return {
            "source": self.source,
            "estimated": self.source == "estimated",
            "devices": [{"name": d, "watts": w} for d, w in zip(self.devices, self.power_w, strict=False)],
            "watts": sum(self.power_w),
            "joules_since_start": ledger.metered_j,
            "attributed_joules": ledger.attributed_total_j,
            "idle_joules": ledger.idle_j,
            "idle_share": ledger.idle_j / ledger.metered_j if ledger.metered_j else None,
            "output_tokens": tokens,
            "joules_per_output_token": ledger.attributed_total_j / tokens if tokens else None,
            "joules_per_output_token_last_minute": last_minute,
            "co2e_grams": self.carbon.grams(ledger.metered_j),
            "grid_intensity_g_per_kwh": self.carbon.grid_g_per_kwh,
            "pue": self.carbon.pue,
            "adapters": by_adapter,
        }
