"""The energy ledger: conservation, engine-side activity, the idle floor, static and dynamic shares."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.energy.floor import IdleFloor
from server.energy.ledger import EnergyAccount, EnergyLedger, EnergyWindow


class Clock:
    """A ledger driven by a script: time and cumulative joules only move forward."""

    def __init__(self, ledger: EnergyLedger) -> None:
        self.ledger = ledger
        self.t = 0.0
        self.j = 0.0
        self.windows: list[EnergyWindow] = []
        ledger.reading(self.t, self.j)

    def advance(self, seconds: float, watts: float) -> EnergyWindow:
        self.t += seconds
        self.j += seconds * watts
        window = self.ledger.reading(self.t, self.j)
        assert window is not None
        self.windows.append(window)
        return window

    def open(self, prompt_tokens: int = 100, adapter: str = "base", tier: str = "default") -> EnergyAccount:
        account = EnergyAccount(adapter, tier, prompt_tokens, self.t)
        self.ledger.open(account)
        return account


def totals(windows: list[EnergyWindow]) -> dict[str, float]:
    return {
        "metered": sum(w.metered_j for w in windows),
        "idle": sum(w.idle_j for w in windows),
        "static": sum(w.static_j for w in windows),
        "dynamic": sum(w.dynamic_j for w in windows),
        "shares": sum(s.joules for w in windows for s in w.shares.values()),
        "dynamic_shares": sum(s.dynamic_j for w in windows for s in w.shares.values()),
    }


# One event: open, tokens, first token, close, engine step, or a meter reading (seconds, watts).
events = st.lists(
    st.one_of(
        st.tuples(st.just("open"), st.integers(0, 30), st.integers(0, 2000)),
        st.tuples(st.just("tokens"), st.integers(0, 30), st.integers(0, 8)),
        st.tuples(st.just("first"), st.integers(0, 30), st.none()),
        st.tuples(st.just("close"), st.integers(0, 30), st.none()),
        st.tuples(st.just("step"), st.booleans(), st.integers(0, 5)),
        st.tuples(st.just("reading"), st.floats(0.001, 2), st.floats(0, 800, allow_nan=False)),
    ),
    max_size=2000,
)


@settings(max_examples=200, deadline=None)
@given(events, st.floats(0, 300))
def test_attributed_plus_idle_equals_metered(script: list, floor_watts: float) -> None:
    floor = IdleFloor()
    floor.watts = floor_watts
    ledger = EnergyLedger(0.25, 1.0, floor, grams_per_joule_at=lambda _: 1e-4)
    clock = Clock(ledger)
    live: dict[int, EnergyAccount] = {}
    accounts: list[EnergyAccount] = []
    for kind, key, value in script:
        if kind == "open" and key not in live:
            live[key] = clock.open(prompt_tokens=value)
            accounts.append(live[key])
        elif kind == "tokens" and key in live:
            live[key].decode_tokens += value
        elif kind == "first" and key in live and live[key].in_prefill:
            ledger.first_token(live[key])
        elif kind == "close" and key in live:
            ledger.close(live.pop(key), clock.t)
        elif kind == "step":
            ledger.engine_step(key, value)
        elif kind == "reading":
            clock.advance(key, value)
    for account in live.values():
        ledger.close(account, clock.t)
    clock.advance(1.0, 50.0)  # close the last interval: every account is settled now
    sums = totals(clock.windows)
    assert sums["metered"] == pytest.approx(clock.j, rel=1e-9, abs=1e-9)
    assert sums["idle"] + sums["static"] + sums["dynamic"] == pytest.approx(
        sums["metered"], rel=1e-9, abs=1e-6
    )
    assert sums["shares"] == pytest.approx(sums["static"] + sums["dynamic"], rel=1e-9, abs=1e-6)
    assert sum(a.joules for a in accounts) == pytest.approx(sums["shares"], rel=1e-9, abs=1e-6)
    assert sum(a.dynamic_j for a in accounts) == pytest.approx(sums["dynamic_shares"], rel=1e-9, abs=1e-6)
    assert all(a.settled and 0 <= a.dynamic_j <= a.joules + 1e-9 for a in accounts)
    assert all(w.static_j >= 0 and w.dynamic_j >= 0 for w in clock.windows)


def test_replay_of_a_loaded_gpu_books_idle_only_for_empty_intervals() -> None:
    """Shaped like the H100 run: long prefill-only stretches and token events that arrive late."""
    ledger = EnergyLedger(0.25, 1.0, IdleFloor(min_idle_s=1.0, settle_s=0.5))
    clock = Clock(ledger)
    truly_idle_j = sum(clock.advance(0.1, 120.0).metered_j for _ in range(20))  # 2 s idle at 120 W
    requests = [clock.open(prompt_tokens=512) for _ in range(256)]
    prefill_j = 0.0
    for _ in range(20):  # 2 s of chunked prefill: steps run, no request has a token yet
        for _ in range(3):
            ledger.engine_step(produced_output=False, waiting=0)
        prefill_j += clock.advance(0.1, 560.0).metered_j
    for request in requests:
        ledger.first_token(request)
        request.decode_tokens += 1
    for second in range(20):  # decode; every other interval, the event loop falls behind
        for _ in range(4):
            ledger.engine_step(produced_output=True, waiting=0)
        if second % 2 == 0:
            for request in requests:
                request.decode_tokens += 8
        clock.advance(0.1, 590.0)
    for request in requests:
        ledger.close(request, clock.t)
    clock.advance(0.1, 300.0)  # the interval in which they finished
    truly_idle_j += sum(clock.advance(0.1, 120.0).metered_j for _ in range(20))
    sums = totals(clock.windows)
    assert sums["idle"] == pytest.approx(truly_idle_j)
    assert sums["idle"] / sums["metered"] < 0.2
    assert ledger.floor.measured
    assert ledger.floor.watts == pytest.approx(120.0)
    prefill_stretch = clock.windows[20:40]
    assert sum(
        s.joules for w in prefill_stretch for (_, _, phase), s in w.shares.items() if phase == "prefill"
    ) == (pytest.approx(prefill_j))
    assert sum(r.joules for r in requests) == pytest.approx(sums["metered"] - sums["idle"])
    assert sum(r.output_tokens for r in requests) == 256 * (1 + 8 * 10)


def test_a_lone_request_pays_the_floor_and_adds_its_dynamic_share() -> None:
    floor = IdleFloor()
    floor.watts = 100.0
    clock = Clock(EnergyLedger(0.25, 1.0, floor))
    request = clock.open(prompt_tokens=10)
    clock.ledger.first_token(request)
    request.decode_tokens += 32
    clock.ledger.engine_step(produced_output=True, waiting=0)
    clock.ledger.close(request, clock.t + 0.5)
    clock.advance(1.0, 150.0)
    assert request.settled
    assert request.joules == pytest.approx(150.0)
    assert request.dynamic_j == pytest.approx(50.0)
    assert request.output_tokens == 32


def test_dynamic_energy_follows_weighted_tokens_and_static_follows_presence() -> None:
    floor = IdleFloor()
    floor.watts = 10.0
    clock = Clock(EnergyLedger(prefill_weight=0.5, decode_weight=1.0, floor=floor))
    early, late = clock.open(prompt_tokens=4), None
    clock.t += 0.5  # the second request arrives half-way through the interval
    late = clock.open(prompt_tokens=4)
    clock.t -= 0.5
    clock.ledger.first_token(early)  # 4 prompt tokens × 0.5 = 2
    late.decode_tokens += 6  # 6 × 1.0 = 6 (decode without a first token: still counted as work)
    window = clock.advance(1.0, 18.0)  # 10 J static, 8 J dynamic
    assert (window.static_j, window.dynamic_j) == (pytest.approx(10.0), pytest.approx(8.0))
    assert early.dynamic_j == pytest.approx(2.0)
    assert late.dynamic_j == pytest.approx(6.0)
    # Static by presence: the early request was held 1 s, the late one 0.5 s.
    assert early.joules - early.dynamic_j == pytest.approx(10.0 * 1.0 / 1.5)
    assert late.joules - late.dynamic_j == pytest.approx(10.0 * 0.5 / 1.5)


def test_requests_queued_in_the_engine_sit_out_the_static_share() -> None:
    floor = IdleFloor()
    floor.watts = 100.0
    clock = Clock(EnergyLedger(0.25, 1.0, floor))
    running = clock.open()
    clock.ledger.first_token(running)
    clock.t += 0.01
    queued = clock.open()
    clock.t -= 0.01
    clock.ledger.engine_step(produced_output=True, waiting=1)
    running.decode_tokens += 1
    clock.advance(1.0, 100.0)
    assert queued.joules == 0.0
    assert running.joules == pytest.approx(100.0)


def test_an_interval_whose_tokens_arrive_late_is_shared_by_presence() -> None:
    clock = Clock(EnergyLedger())
    a, b = clock.open(), clock.open()
    for request in (a, b):
        clock.ledger.first_token(request)
    clock.advance(0.1, 100.0)
    clock.ledger.engine_step(produced_output=True, waiting=0)  # tokens still on their way
    window = clock.advance(0.1, 100.0)
    assert window.idle_j == 0.0
    assert a.joules == pytest.approx(b.joules)


def test_stale_readings_are_ignored() -> None:
    ledger = EnergyLedger()
    assert ledger.reading(1.0, 10.0) is None
    assert ledger.reading(2.0, 13.0) is not None
    assert ledger.reading(1.5, 12.0) is None  # an older reading arriving late
    assert ledger.reading(3.0, 12.5) is None  # a counter below the last one


def test_the_floor_is_learnt_from_idle_runs_and_re_measured() -> None:
    floor = IdleFloor(min_idle_s=1.0, settle_s=0.5)
    for _ in range(10):
        floor.idle(0.1, 10.0)  # 100 W, but only 0.5 s counted after settling
    assert not floor.measured
    for _ in range(6):
        floor.idle(0.1, 12.0)
    assert floor.measured
    assert floor.watts == pytest.approx((5 * 10.0 + 6 * 12.0) / 1.1)
    floor.busy()
    for _ in range(20):
        floor.idle(0.1, 8.0)
    assert floor.watts == pytest.approx(80.0)


def test_without_a_meter_a_closed_account_settles_at_once() -> None:
    ledger = EnergyLedger()
    account = EnergyAccount("base", "default", 3, 0.0)
    ledger.open(account)
    ledger.close(account, 1.0)
    ledger.settle_unmetered(account)
    assert account.settled
    assert ledger.reading(0.0, 0.0) is None  # first reading: nothing resident any more
