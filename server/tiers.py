"""The service tiers: one table of what each tier means to admission, the engine, the governor and metrics.

OpenAI's `service_tier` values as served here: `auto` and an unset field are served as `default`;
`flex` trades latency for energy (it waits in the flex lane and rides along running batches);
`priority` goes first. Every rule about a tier reads this table; nothing else spells tier names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# What a request may ask for (OpenAI's wire values); `served_tier` maps it to a row of `TIERS`.
RequestedTier = Literal["auto", "default", "flex", "priority"]


@dataclass(frozen=True)
class Tier:
    """What one service tier means.

    Attributes:
        name: The tier's name, as responses echo it and as the `tier` metric label.
        admission_rank: Order in the admission queue (lower first; equal ranks go by arrival).
        engine_priority: vLLM's priority value (lower first); it orders the engine's queue under
            `--scheduling-policy priority` and is ignored under fcfs, where admission does the ordering.
        governed: Whether the SLO governor judges the tier's latency (flex waits by design: it has no
            latency objective).
        waits_in_lane: Whether requests first wait their turn in the flex lane.
        waits_for_companions: Whether a request finding the engine nearly idle waits out the governor's
            batching window for others to start with.
    """

    name: str
    admission_rank: int
    engine_priority: int
    governed: bool
    waits_in_lane: bool
    waits_for_companions: bool


PRIORITY = Tier("priority", 0, -1, governed=True, waits_in_lane=False, waits_for_companions=False)
DEFAULT = Tier("default", 1, 0, governed=True, waits_in_lane=False, waits_for_companions=True)
# A flex request released from its lane keeps its arrival time, so rank 1 puts it ahead of default
# requests that came after it and it is never starved.
FLEX = Tier("flex", 1, 1, governed=False, waits_in_lane=True, waits_for_companions=False)

TIERS: dict[str, Tier] = {tier.name: tier for tier in (PRIORITY, DEFAULT, FLEX)}


def served_tier(requested: RequestedTier | None) -> Tier:
    """The tier a request is served in (`auto` and unset are `default`)."""
    return DEFAULT if requested in (None, "auto") else TIERS[requested]
