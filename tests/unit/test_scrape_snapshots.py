"""Scrape snapshots: one render serves every scrape that arrived before it began, renders are spaced."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable

import pytest

from server.api.scrape import ScrapeSnapshots, Snapshot
from tests.waiting import until


class FakeClock:
    """Monotonic time that moves only when a sleep asks it to."""

    def __init__(self) -> None:
        self.now_s = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now_s

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now_s += seconds


class Source:
    """A counter the renders read: each snapshot says which state it saw, and on which thread."""

    def __init__(self) -> None:
        self.state = 0
        self.renders = 0
        self.threads: list[threading.Thread] = []
        self.gate = threading.Event()  # a render in its thread finishes once the gate is open
        self.gate.set()

    def render(self) -> Callable[[], Snapshot]:
        self.renders += 1
        seen = self.state  # read on the event loop when the render begins

        def in_thread() -> Snapshot:
            self.threads.append(threading.current_thread())
            self.gate.wait(10)
            return Snapshot(b"metrics %d" % seen, b"energy %d" % seen)

        return in_thread


async def test_concurrent_scrapes_share_one_render_made_off_the_event_loop() -> None:
    source, clock = Source(), FakeClock()
    snapshots = ScrapeSnapshots(source.render, 0.25, clock=clock, sleep=clock.sleep)
    results = await asyncio.gather(*(snapshots.latest() for _ in range(10)))
    assert source.renders == 1
    assert {result.metrics for result in results} == {b"metrics 0"}
    assert source.threads
    assert threading.main_thread() not in source.threads


async def test_a_scrape_never_gets_a_render_begun_before_it_arrived() -> None:
    source, clock = Source(), FakeClock()
    snapshots = ScrapeSnapshots(source.render, 0.25, clock=clock, sleep=clock.sleep)
    assert (await snapshots.latest()).energy == b"energy 0"
    source.state = 1  # something happened after that render
    after = await snapshots.latest()
    assert after.energy == b"energy 1"
    assert after.metrics == b"metrics 1"  # the page and the document come from the same moment


async def test_renders_begin_at_most_once_per_interval() -> None:
    source, clock = Source(), FakeClock()
    snapshots = ScrapeSnapshots(source.render, 0.25, clock=clock, sleep=clock.sleep)
    for _ in range(4):
        await snapshots.latest()
    assert source.renders == 4
    assert clock.slept == [pytest.approx(0.25)] * 3  # each render after the first waited out the interval


def waiting_in(task: asyncio.Task) -> bool:
    """Whether the task has started and is suspended at an await."""
    return inspect.getcoroutinestate(task.get_coro()) == inspect.CORO_SUSPENDED


async def test_a_scraper_that_leaves_does_not_cancel_the_render_others_wait_for() -> None:
    source, clock = Source(), FakeClock()
    source.gate.clear()  # the render holds until both scrapes wait on it and one has left
    snapshots = ScrapeSnapshots(source.render, 0.25, clock=clock, sleep=clock.sleep)
    leaving = asyncio.create_task(snapshots.latest())
    staying = asyncio.create_task(snapshots.latest())
    await until(lambda: all(waiting_in(task) for task in (leaving, staying)), "both scrapes waiting")
    assert source.renders == 1  # the same render
    leaving.cancel()
    source.gate.set()
    assert (await staying).metrics == b"metrics 0"


async def test_a_failed_render_fails_the_scrapes_waiting_for_it_and_the_next_one_renders_again() -> None:
    clock = FakeClock()
    calls = []

    def render() -> Callable[[], Snapshot]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("collector broke")
        return lambda: Snapshot(b"m", b"e")

    snapshots = ScrapeSnapshots(render, 0.0, clock=clock, sleep=clock.sleep)
    with pytest.raises(RuntimeError, match="collector broke"):
        await snapshots.latest()
    assert (await snapshots.latest()).metrics == b"m"
