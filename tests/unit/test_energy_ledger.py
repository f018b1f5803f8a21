"""The energy ledger conserves energy: attributed + idle = metered, whatever the overlap of requests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.energy.ledger import EnergyLedger

# One event: start a request, give a request tokens, finish a request, or take a meter reading.
events = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.integers(0, 30), st.sampled_from(["base", "a", "b"])),
        st.tuples(st.just("tokens"), st.integers(0, 30), st.tuples(st.integers(0, 500), st.integers(0, 8))),
        st.tuples(st.just("finish"), st.integers(0, 30), st.none()),
        st.tuples(st.just("reading"), st.floats(0, 50, allow_nan=False), st.none()),
    ),
    max_size=3000,
)


@settings(max_examples=200, deadline=None)
@given(events)
def test_attributed_plus_idle_equals_metered(script: list) -> None:
    ledger = EnergyLedger(prefill_weight=0.25, decode_weight=1.0)
    total = 0.0
    ledger.reading(total)
    live: set[int] = set()
    accounts = {}
    for kind, key, value in script:
        if kind == "start" and key not in live and key not in accounts:
            ledger.start(str(key), value)
            live.add(key)
        elif kind == "tokens" and key in live:
            ledger.add_tokens(str(key), prefill=value[0], decode=value[1])
        elif kind == "finish" and key in live:
            live.discard(key)
            accounts[key] = ledger.finish(str(key))
        elif kind == "reading":
            total += key
            ledger.reading(total)
    # Close the last interval so every piece of work has been metered.
    total += 1.0
    ledger.reading(total)
    assert ledger.metered_j == pytest.approx(total, rel=1e-9, abs=1e-9)
    assert ledger.attributed_total_j + ledger.idle_j == pytest.approx(ledger.metered_j, rel=1e-9, abs=1e-9)
    per_request = sum(account.joules for account in accounts.values())
    assert per_request <= ledger.attributed_total_j + 1e-6


def test_shares_follow_weighted_tokens() -> None:
    ledger = EnergyLedger(prefill_weight=0.5, decode_weight=1.0)
    ledger.reading(0.0)
    ledger.start("x", "base")
    ledger.start("y", "a")
    ledger.add_tokens("x", prefill=4)  # weight 2
    ledger.add_tokens("y", decode=6)  # weight 6
    ledger.reading(8.0)
    assert ledger.finish("x").joules == pytest.approx(2.0)
    assert ledger.finish("y").joules == pytest.approx(6.0)
    assert ledger.attributed_j == {("base", "prefill"): 2.0, ("a", "decode"): 6.0}


def test_interval_without_work_is_idle_and_stale_readings_are_ignored() -> None:
    ledger = EnergyLedger()
    ledger.reading(10.0)
    ledger.reading(13.0)
    ledger.reading(12.0)  # older reading arriving late
    assert (ledger.idle_j, ledger.metered_j) == (3.0, 3.0)
