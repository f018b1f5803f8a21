"""Open- and closed-loop drivers with a fake `send`: schedule order, concurrency limits, phases.

Only ordering is asserted (a request never goes before its time, never past a free slot), never how
promptly the loop kept up: the machine may be busy.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import uvloop

from loadtest.arrivals import schedule
from loadtest.client import Outcome
from loadtest.scheduler import Sent, Window, run_closed_loop, run_open_loop
from tests.waiting import until

# Stamps are differences of perf_counter floats: allow for their rounding, nothing more.
FLOAT_SLACK_S = 1e-9


class FakeSend:
    """Sleeps `work_s` per request, counting how many are in flight at once."""

    def __init__(self, work_s: float) -> None:
        self.work_s = work_s
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls: list[int] = []
        self.called_at: dict[int, float] = {}

    async def __call__(self, index: int) -> Outcome:
        outcome = Outcome(sent_at=time.perf_counter())
        self.called_at[index] = outcome.sent_at
        self.calls.append(index)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.work_s)  # the request's service time, which the drivers work around
        finally:
            self.in_flight -= 1
        outcome.first_token_at = outcome.end_at = time.perf_counter()
        outcome.completion_tokens = index
        return outcome


class GatedSend:
    """Holds every request until the test lets it finish, recording the order they start and end in."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.finished: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._gates: dict[int, asyncio.Event] = {}

    async def __call__(self, index: int) -> Outcome:
        outcome = Outcome(sent_at=time.perf_counter())
        self.started.append(index)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        gate = self._gates.setdefault(index, asyncio.Event())
        try:
            await gate.wait()
        finally:
            self.in_flight -= 1
        self.finished.append(index)
        outcome.first_token_at = outcome.end_at = time.perf_counter()
        outcome.completion_tokens = index
        return outcome

    def finish(self, index: int) -> None:
        self._gates.setdefault(index, asyncio.Event()).set()


OFFSETS = schedule("poisson", rate=100.0, duration_s=0.5, seed=3)


def test_the_schedule_is_about_fifty_offsets_over_half_a_second() -> None:
    assert 30 <= len(OFFSETS) <= 75
    assert OFFSETS[-1] < 0.5


async def test_open_loop_never_dispatches_before_the_schedule() -> None:
    send = FakeSend(work_s=0.01)
    done: list[Sent] = []
    started_at = time.perf_counter()
    sent = await run_open_loop(OFFSETS, send, started_at, on_done=done.append)
    assert [s.index for s in sent] == list(range(len(OFFSETS)))
    assert sorted(send.calls) == list(range(len(OFFSETS)))
    assert sorted(s.index for s in done) == list(range(len(OFFSETS)))
    for s in sent:
        assert s.scheduled_at_s == OFFSETS[s.index]
        assert s.dispatched_at_s >= s.scheduled_at_s - FLOAT_SLACK_S
        assert s.outcome.sent_at - started_at >= s.dispatched_at_s
        assert s.outcome.completion_tokens == s.index  # each record carries its own request's outcome


def test_open_loop_never_dispatches_early_on_uvloop() -> None:
    # The runner drives points on uvloop, whose millisecond timers can wake a sleep before it is due.
    send = FakeSend(work_s=0.0)

    async def point() -> list[Sent]:
        return await run_open_loop(OFFSETS, send, time.perf_counter())

    sent = uvloop.run(point())
    assert len(sent) == len(OFFSETS)
    for s in sent:
        assert s.dispatched_at_s >= s.scheduled_at_s - FLOAT_SLACK_S


async def test_open_loop_dispatches_in_schedule_order() -> None:
    send = FakeSend(work_s=0.0)
    sent = await run_open_loop(OFFSETS, send, time.perf_counter())
    dispatched = [s.dispatched_at_s for s in sent]
    assert dispatched == sorted(dispatched)


async def test_open_loop_with_a_cap_waits_for_a_free_slot() -> None:
    # Six requests due at once, two slots: each later one is dispatched on time, then sent only when a
    # request in flight ends, one for one.
    send = GatedSend()
    started_at = time.perf_counter()
    run = asyncio.create_task(run_open_loop(np.zeros(6), send, started_at, concurrency_cap=2))
    await until(lambda: send.started == [0, 1], "the first two sent")
    for ended, expected in ((1, [0, 1, 2]), (0, [0, 1, 2, 3]), (3, [0, 1, 2, 3, 4]), (2, [0, 1, 2, 3, 4, 5])):
        assert send.in_flight == 2  # the others wait for a slot
        send.finish(ended)
        await until(lambda expected=expected: send.started == expected, f"request {expected[-1]} sent")
    for index in (4, 5):
        send.finish(index)
    sent = await asyncio.wait_for(run, 5)
    assert send.max_in_flight == 2
    assert send.finished == [1, 0, 3, 2, 4, 5]
    assert [s.index for s in sent] == list(range(6))
    for s in sent:
        assert s.outcome.completion_tokens == s.index
        assert s.outcome.sent_at - started_at >= s.dispatched_at_s  # dispatched, then waited for a slot


async def test_open_loop_without_a_cap_runs_everything_at_once() -> None:
    # Ten requests scheduled at 0, none finishing until all ten are in flight together.
    send = GatedSend()
    run = asyncio.create_task(run_open_loop(np.zeros(10), send, time.perf_counter()))
    await until(lambda: send.in_flight == 10, "ten in flight")
    for index in range(10):
        send.finish(index)
    assert len(await asyncio.wait_for(run, 5)) == 10


async def test_open_loop_late_start_dispatches_immediately_and_records_the_lag() -> None:
    # The point's time zero is already 0.2 s in the past: every dispatch is late, none is early.
    send = FakeSend(work_s=0.0)
    offsets = np.array([0.0, 0.05, 0.1])
    sent = await run_open_loop(offsets, send, time.perf_counter() - 0.2)
    assert all(s.dispatched_at_s >= 0.2 for s in sent)


async def test_closed_loop_holds_the_concurrency() -> None:
    send = FakeSend(work_s=0.02)
    done: list[Sent] = []
    started_at = time.perf_counter()
    sent = await run_closed_loop(3, 0.3, send, started_at, on_done=done.append)
    assert send.max_in_flight == 3
    indices = [s.index for s in sent]
    assert indices == list(range(len(sent)))
    assert len(done) == len(sent)
    # Three workers, 20 ms each, for 300 ms: at most 3 * 15 requests, and each worker sends more than one.
    assert 3 < len(sent) <= 3 * 15 + 3
    for s in sent:
        assert s.scheduled_at_s == s.dispatched_at_s
        assert 0.0 <= s.scheduled_at_s < 0.3
        assert s.outcome.sent_at - started_at >= s.scheduled_at_s
        assert s.outcome.completion_tokens == s.index


async def test_closed_loop_sends_nothing_after_the_duration() -> None:
    send = FakeSend(work_s=0.0)
    sent = await run_closed_loop(2, 0.05, send, time.perf_counter() - 0.1)
    assert sent == []
    assert send.calls == []


@pytest.mark.parametrize(
    ("at_s", "phase"),
    [
        (0.0, "warmup"),
        (4.999, "warmup"),
        (5.0, "measure"),
        (10.0, "measure"),
        (14.999, "measure"),
        (15.0, "cooldown"),
        (100.0, "cooldown"),
    ],
)
def test_window_phase_boundaries(at_s: float, phase: str) -> None:
    assert Window(start_s=5.0, end_s=15.0).phase(at_s) == phase


def test_window_without_warmup() -> None:
    window = Window(start_s=0.0, end_s=1.0)
    assert window.phase(0.0) == "measure"
    assert window.phase(1.0) == "cooldown"
