"""Pure energy attribution: split each metered interval's energy across the requests that made tokens in it.

Invariant (tested): attributed energy + idle energy = metered energy, to floating-point rounding. An
interval in which no request made a token is idle energy. Within an interval, each request's share is its
weighted token count (prefill and decode weights are configurable) over the interval's total.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

PHASES = ("prefill", "decode")


@dataclass
class RequestEnergy:
    """Energy attributed so far to one request, by phase."""

    adapter: str
    joules_by_phase: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    pending: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    finished: bool = False

    @property
    def joules(self) -> float:
        """Total attributed joules."""
        return sum(self.joules_by_phase.values())


@dataclass(frozen=True)
class IntervalAttribution:
    """What one closed interval added: joules per (adapter, phase), idle joules."""

    metered_j: float
    by_adapter_phase: dict[tuple[str, str], float]
    idle_j: float


class EnergyLedger:
    """Accumulates token work between meter readings and attributes each reading's delta."""

    def __init__(self, prefill_weight: float = 0.25, decode_weight: float = 1.0) -> None:
        self._weights = {"prefill": prefill_weight, "decode": decode_weight}
        self._requests: dict[str, RequestEnergy] = {}
        self._last_total_j: float | None = None
        self.metered_j = 0.0
        self.idle_j = 0.0
        self.attributed_j: defaultdict[tuple[str, str], float] = defaultdict(float)

    def start(self, request_id: str, adapter: str) -> None:
        """Open a request's account."""
        self._requests[request_id] = RequestEnergy(adapter)

    def add_tokens(self, request_id: str, *, prefill: int = 0, decode: int = 0) -> None:
        """Record tokens a request produced since the last reading."""
        pending = self._requests[request_id].pending
        pending["prefill"] += prefill * self._weights["prefill"]
        pending["decode"] += decode * self._weights["decode"]

    def reading(self, total_j: float) -> IntervalAttribution | None:
        """Close the interval ending at a cumulative meter reading of `total_j` joules.

        Readings may arrive out of order from two threads; one below the last is ignored (its energy is
        part of the later, larger reading). A reading equal to the last closes an interval of zero joules:
        the pending work is settled with nothing, so a finishing request's account is complete at once.
        """
        if self._last_total_j is None:
            self._last_total_j = total_j
            return None
        if total_j < self._last_total_j:
            return None
        delta_j, self._last_total_j = total_j - self._last_total_j, total_j
        self.metered_j += delta_j
        weight = sum(sum(account.pending.values()) for account in self._requests.values())
        by_adapter_phase: defaultdict[tuple[str, str], float] = defaultdict(float)
        if weight <= 0:
            self.idle_j += delta_j
        else:
            for account in self._requests.values():
                for phase, work in account.pending.items():
                    if work:
                        share_j = delta_j * work / weight
                        account.joules_by_phase[phase] += share_j
                        by_adapter_phase[(account.adapter, phase)] += share_j
                        account.pending[phase] = 0.0
            for key, joules in by_adapter_phase.items():
                self.attributed_j[key] += joules
        self._forget_settled()
        return IntervalAttribution(delta_j, dict(by_adapter_phase), 0.0 if weight > 0 else delta_j)

    def finish(self, request_id: str) -> RequestEnergy:
        """Mark a request finished; its account is dropped once no work of it is pending."""
        account = self._requests[request_id]
        account.finished = True
        self._forget_settled()
        return account

    def _forget_settled(self) -> None:
        settled = [
            rid for rid, acc in self._requests.items() if acc.finished and not any(acc.pending.values())
        ]
        for request_id in settled:
            del self._requests[request_id]

    @property
    def attributed_total_j(self) -> float:
        """All energy attributed to requests so far."""
        return sum(self.attributed_j.values())
