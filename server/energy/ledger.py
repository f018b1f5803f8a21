"""Pure energy attribution: split each metered interval across the requests the engine held in it.

Invariant (tested): attributed + idle = metered, to floating-point rounding, over any sequence of events.

Who was working comes from the engine, not from token arrival: an interval is busy when the engine held a
request (from submission to finish) or ran a step in it, and idle only when neither happened. Token
events reach the API process late under load and prefill-only steps produce none, so an interval without
token events can still be a busy one.

A busy interval's energy is split in two:
- static: the idle floor (watts) × duration, shared by presence (seconds each request was held in the
  interval; requests still waiting in the engine's queue are left out while others run);
- dynamic: the rest, shared by work: output tokens × decode weight and prompt tokens × prefill weight
  (prompt tokens are credited when the first token arrives). The share of the interval's engine steps
  that produced no output at all (prefill-only steps of long prompts) goes to the requests in prefill,
  by prompt length. An interval whose work has not arrived yet is shared by presence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from server.energy.floor import IdleFloor

JOULES_PER_KWH = 3.6e6
PREFILL, DECODE = "prefill", "decode"


@dataclass(slots=True, eq=False)
class EnergyAccount:
    """One engine request's energy. The request path adds to `decode_tokens`; the ledger does the rest."""

    adapter: str
    tier: str
    prompt_tokens: int
    opened_s: float
    closed_s: float | None = None
    in_prefill: bool = True
    decode_tokens: int = 0  # output tokens since the last closed interval
    prefill_tokens: int = 0  # prompt tokens credited since the last closed interval
    output_tokens: int = 0
    prefill_j: float = 0.0
    decode_j: float = 0.0
    dynamic_j: float = 0.0
    grams: float = 0.0
    settled: bool = False
    lane_wait_s: float = 0.0  # time spent in the flex lane before admission
    # Grams per joule when the request arrived, for one the carbon gate held back: what running it at once
    # would have cost, against which the grams avoided are counted.
    baseline_g_per_j: float | None = None

    @property
    def joules(self) -> float:
        """Everything attributed so far (static and dynamic, both phases)."""
        return self.prefill_j + self.decode_j

    @property
    def avoided_grams(self) -> float:
        """Grams of CO2e saved by running later than arrival (0 unless the carbon gate held it)."""
        if self.baseline_g_per_j is None:
            return 0.0
        return self.joules * self.baseline_g_per_j - self.grams


@dataclass(slots=True)
class Share:
    """What one (adapter, tier, phase) received in an interval."""

    joules: float = 0.0
    dynamic_j: float = 0.0
    grams: float = 0.0
    output_tokens: int = 0


@dataclass(slots=True)
class EnergyWindow:
    """One closed interval, as the exporters need it."""

    start_s: float
    end_s: float
    metered_j: float
    idle_j: float
    static_j: float
    dynamic_j: float
    idle_grams: float
    floor_w: float
    shares: dict[tuple[str, str, str], Share] = field(default_factory=dict)
    settled: list[EnergyAccount] = field(default_factory=list)

    @property
    def attributed_j(self) -> float:
        """Energy given to requests in this interval."""
        return self.static_j + self.dynamic_j


class EnergyLedger:
    """Accumulates engine activity between meter readings and attributes each reading's delta."""

    def __init__(
        self,
        prefill_weight: float = 0.25,
        decode_weight: float = 1.0,
        floor: IdleFloor | None = None,
        grams_per_joule_at: Callable[[float], float] = lambda _: 0.0,
    ) -> None:
        self._prefill_weight = prefill_weight
        self._decode_weight = decode_weight
        self.floor = floor or IdleFloor()
        self.grams_per_joule_at = grams_per_joule_at
        self._residents: dict[int, EnergyAccount] = {}
        self._steps = 0
        self._steps_without_output = 0
        self._engine_waiting = 0
        self._last: tuple[float, float] | None = None  # (seconds, cumulative joules) of the last reading

    def open(self, account: EnergyAccount) -> None:
        """A request entered the engine."""
        self._residents[id(account)] = account

    @staticmethod
    def first_token(account: EnergyAccount) -> None:
        """A request's prefill is done: its prompt counts as work in the current interval."""
        account.in_prefill = False
        account.prefill_tokens += account.prompt_tokens

    @staticmethod
    def close(account: EnergyAccount, now_s: float) -> None:
        """A request left the engine; it is settled when the interval holding `now_s` closes."""
        if account.closed_s is None:
            account.closed_s = now_s

    def engine_step(self, produced_output: bool, waiting: int) -> None:
        """The engine ran one step; `waiting` requests sat in its queue after it."""
        self._steps += 1
        self._steps_without_output += not produced_output
        self._engine_waiting = waiting

    def settle_unmetered(self, account: EnergyAccount) -> None:
        """Without a meter no interval ever closes: settle a closed account at once."""
        self._residents.pop(id(account), None)
        account.settled = True

    def reading(self, now_s: float, total_j: float) -> EnergyWindow | None:
        """Close the interval ending at a cumulative meter reading of `total_j` joules taken at `now_s`.

        Readings may arrive out of order from two threads; one older than the last is ignored (its
        energy is part of the later reading).
        """
        if self._last is None:
            self._last = (now_s, total_j)
            return None
        start_s, last_j = self._last
        if now_s < start_s or total_j < last_j:
            return None
        self._last = (now_s, total_j)
        energy_j, duration_s = total_j - last_j, now_s - start_s
        residents = list(self._residents.values())
        grams_per_j = self.grams_per_joule_at((start_s + now_s) / 2)
        if not residents:
            # Steps without any request held (an abort still winding down) are booked idle too.
            if self._steps == 0:
                self.floor.idle(duration_s, energy_j)
            window = self._window(start_s, now_s, energy_j, energy_j, 0.0, 0.0, grams_per_j)
        else:
            self.floor.busy()
            static_j = min(energy_j, self.floor.watts * duration_s)
            window = self._window(start_s, now_s, energy_j, 0.0, static_j, energy_j - static_j, grams_per_j)
            self._split(window, residents, grams_per_j)
        self._steps = self._steps_without_output = 0
        for account in residents:
            account.decode_tokens = account.prefill_tokens = 0
            if account.closed_s is not None and account.closed_s <= now_s:
                del self._residents[id(account)]
                account.settled = True
                window.settled.append(account)
        return window

    def _window(  # noqa: PLR0917 - one positional per figure of the window, all floats
        self,
        start_s: float,
        end_s: float,
        metered_j: float,
        idle_j: float,
        static_j: float,
        dynamic_j: float,
        grams_per_j: float,
    ) -> EnergyWindow:
        return EnergyWindow(
            start_s, end_s, metered_j, idle_j, static_j, dynamic_j, idle_j * grams_per_j, self.floor.watts
        )

    def _split(self, window: EnergyWindow, residents: list[EnergyAccount], grams_per_j: float) -> None:
        presence = self._presence(window.start_s, window.end_s, residents)
        _give_by_weight(window, presence, window.static_j, grams_per_j, dynamic=False)
        dynamic_j = window.dynamic_j
        in_prefill = {a: float(a.prompt_tokens or 1) for a in residents if a.in_prefill}
        if self._steps and in_prefill:
            prefill_only_j = dynamic_j * self._steps_without_output / self._steps
            _give_by_weight(window, in_prefill, prefill_only_j, grams_per_j, dynamic=True)
            dynamic_j -= prefill_only_j
        work = {}
        for account in residents:
            decode = account.decode_tokens * self._decode_weight
            prefill = account.prefill_tokens * self._prefill_weight
            if decode or prefill:
                work[account] = (prefill, decode)
            if account.decode_tokens:
                account.output_tokens += account.decode_tokens
                _share(window, account, DECODE).output_tokens += account.decode_tokens
        if work:
            total = sum(p + d for p, d in work.values())
            for account, (prefill, decode) in work.items():
                _give(window, account, PREFILL, dynamic_j * prefill / total, grams_per_j, dynamic=True)
                _give(window, account, DECODE, dynamic_j * decode / total, grams_per_j, dynamic=True)
        else:  # the tokens of this interval's steps have not reached the API process yet
            _give_by_weight(window, presence, dynamic_j, grams_per_j, dynamic=True)

    def _presence(self, start_s: float, end_s: float, residents: list[EnergyAccount]) -> dict:
        """Seconds each request was held in the interval; the engine's queued requests sit out."""
        queued: set[int] = set()
        if self._engine_waiting:
            waiting_first = sorted(
                (a for a in residents if a.in_prefill), key=lambda a: a.opened_s, reverse=True
            )
            if len(waiting_first) < len(residents) or self._engine_waiting < len(waiting_first):
                queued = {id(a) for a in waiting_first[: self._engine_waiting]}
        presence = {}
        for account in residents:
            if id(account) in queued:
                continue
            held_until = end_s if account.closed_s is None else min(end_s, account.closed_s)
            presence[account] = max(0.0, held_until - max(start_s, account.opened_s))
        if not any(presence.values()):
            return dict.fromkeys(presence or residents, 1.0)
        return presence


def _share(window: EnergyWindow, account: EnergyAccount, phase: str) -> Share:
    key = (account.adapter, account.tier, phase)
    share = window.shares.get(key)
    if share is None:
        share = window.shares[key] = Share()
    return share


def _give(
    window: EnergyWindow,
    account: EnergyAccount,
    phase: str,
    joules: float,
    grams_per_j: float,
    *,
    dynamic: bool,
) -> None:
    if not joules:
        return
    if phase == PREFILL:
        account.prefill_j += joules
    else:
        account.decode_j += joules
    grams = joules * grams_per_j
    account.grams += grams
    share = _share(window, account, phase)
    share.joules += joules
    share.grams += grams
    if dynamic:
        account.dynamic_j += joules
        share.dynamic_j += joules


def _give_by_weight(
    window: EnergyWindow,
    weights: dict[EnergyAccount, float],
    joules: float,
    grams_per_j: float,
    *,
    dynamic: bool,
) -> None:
    total = sum(weights.values())
    if not joules or total <= 0:
        return
    for account, weight in weights.items():
        phase = PREFILL if account.in_prefill else DECODE
        _give(window, account, phase, joules * weight / total, grams_per_j, dynamic=dynamic)
