"""The configuration of a run: target, workload, load points and what counts as good."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from loadtest.arrivals import Arrival
from loadtest.results import LoadSpec
from loadtest.workload import WorkloadConfig


class RunConfig(BaseModel):
    """One run: a single load point, or a sweep over rates (open loop) or concurrencies (closed loop)."""

    url: str
    api_key: str | None = Field(default=None, exclude=True)  # never written into results
    workload: WorkloadConfig
    mode: Literal["open", "closed"] = "open"
    arrival: Arrival = "poisson"
    burstiness: float = Field(default=1.0, gt=0)
    rates: list[float] = Field(default_factory=list)  # open loop, requests per second
    concurrencies: list[int] = Field(default_factory=list)  # closed loop
    max_concurrency: int | None = Field(default=None, ge=1)  # open loop: a cap on requests in flight
    duration_s: float = Field(default=30.0, gt=0)  # per point, warm-up and cool-down included
    warmup_s: float = Field(default=5.0, ge=0)
    cooldown_s: float = Field(default=2.0, ge=0)
    seed: int = 0
    slos: dict[str, float] = Field(default_factory=dict)
    idle_s: float = Field(default=5.0, ge=0)  # idle-power measurement before and after the sweep
    scrape_period_s: float = Field(default=1.0, gt=0)
    request_timeout_s: float = Field(default=600.0, gt=0)
    stop_at_saturation: bool = True
    keep_requests: bool = False  # per-request records in the JSON and a JSONL file

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.mode == "open" and (not self.rates or any(rate <= 0 for rate in self.rates)):
            raise ValueError("an open-loop run needs --rate with positive values")
        if self.mode == "closed" and (not self.concurrencies or any(c < 1 for c in self.concurrencies)):
            raise ValueError("a closed-loop run needs --concurrency with values of at least 1")
        if self.warmup_s + self.cooldown_s >= self.duration_s:
            raise ValueError("warm-up plus cool-down must be shorter than the duration of a point")
        return self

    def loads(self) -> list[LoadSpec]:
        """The load points in the order they run (ascending, so a sweep can stop at saturation)."""
        if self.mode == "closed":
            return [LoadSpec(mode="closed", concurrency=c) for c in sorted(self.concurrencies)]
        burstiness = self.burstiness if self.arrival == "gamma" else None
        return [
            LoadSpec(
                mode="open",
                arrival=self.arrival,
                rate=rate,
                burstiness=burstiness,
                concurrency=self.max_concurrency,
            )
            for rate in sorted(self.rates)
        ]
