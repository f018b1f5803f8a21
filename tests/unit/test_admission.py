"""Admission: bounded slots and queue, tier order, a flex request's arrival kept, the batching window."""

from __future__ import annotations

import asyncio

import pytest

from server.errors import EngineUnavailableError, OverloadedError
from server.policy.admission import AdmissionController, EngineLoad
from server.tiers import DEFAULT, TIERS
from tests.waiting import until


async def test_full_queue_is_429_with_retry_after() -> None:
    admission = AdmissionController(max_running=1, max_queued=1)
    held = await admission.admit(DEFAULT)
    queued = asyncio.create_task(admission.admit(DEFAULT))
    await until(lambda: admission.queued == 1, "one queued")
    with pytest.raises(OverloadedError) as caught:
        await admission.admit(DEFAULT)
    assert caught.value.headers["Retry-After"].isdigit()
    held.release()
    (await queued).release()
    assert (admission.running, admission.queued) == (0, 0)


async def test_priority_goes_first_then_arrival_order_with_flex_keeping_its_arrival() -> None:
    admission = AdmissionController(max_running=1, max_queued=10)
    held = await admission.admit(DEFAULT)
    order: list[str] = []

    async def wait(name: str, tier: str, arrival_s: float | None = None) -> None:
        ticket = await admission.admit(TIERS[tier], arrival_s)
        order.append(name)
        ticket.release()

    tasks = [asyncio.create_task(wait("default-1", "default"))]
    await until(lambda: admission.queued == 1, "default-1 queued")
    tasks.append(asyncio.create_task(wait("flex-from-long-ago", "flex", arrival_s=1.0)))
    await until(lambda: admission.queued == 2, "the flex request queued")
    tasks.append(asyncio.create_task(wait("priority", "priority")))
    await until(lambda: admission.queued == 3, "the priority request queued")
    held.release()
    await asyncio.gather(*tasks)
    assert order == ["priority", "flex-from-long-ago", "default-1"]


async def test_a_waiter_that_leaves_frees_its_place_and_a_given_slot_is_passed_on() -> None:
    admission = AdmissionController(max_running=1, max_queued=2)
    held = await admission.admit(DEFAULT)
    leaving = asyncio.create_task(admission.admit(DEFAULT))
    staying = asyncio.create_task(admission.admit(DEFAULT))
    await until(lambda: admission.queued == 2, "two queued")
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert admission.queued == 1
    held.release()
    (await staying).release()
    assert (admission.running, admission.queued) == (0, 0)


async def test_a_waiter_that_leaves_as_its_slot_frees_is_counted_out_once() -> None:
    # The disconnect cancels the waiter's task; before that task runs again, a release pops the waiter.
    # The place must still be counted out: a phantom queued request would send every later one into
    # the queue with nothing running to let it out.
    admission = AdmissionController(max_running=1, max_queued=2)
    held = await admission.admit(DEFAULT)
    leaving = asyncio.create_task(admission.admit(DEFAULT))
    await until(lambda: admission.queued == 1, "one queued")
    leaving.cancel()
    held.release()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert (admission.running, admission.queued) == (0, 0)
    (await asyncio.wait_for(admission.admit(DEFAULT), timeout=10)).release()


async def test_close_answers_queued_and_new_requests_503() -> None:
    admission = AdmissionController(max_running=1, max_queued=2)
    await admission.admit(DEFAULT)
    queued = asyncio.create_task(admission.admit(DEFAULT))
    await until(lambda: admission.queued == 1, "one queued")
    admission.close()
    with pytest.raises(EngineUnavailableError):
        await queued
    with pytest.raises(EngineUnavailableError):
        await admission.admit(DEFAULT)


@pytest.mark.parametrize("target", [2, 3, 8])
async def test_the_batching_window_gathers_companions_on_an_idle_engine(target: int) -> None:
    admission = AdmissionController(max_running=8, max_queued=8, load=EngineLoad(8))
    admission.batch_window_s, admission.batch_target = 60.0, target
    early = [asyncio.create_task(admission.admit(DEFAULT)) for _ in range(target - 1)]
    await until(lambda: len(admission._gathering) == target - 1, "companions gathering")
    assert not any(task.done() for task in early)  # waiting for the last companion (or the window)
    last = await asyncio.wait_for(admission.admit(DEFAULT), 2)
    # The last companion closes the window for all, long before its 60 s end.
    tickets = [*await asyncio.wait_for(asyncio.gather(*early), 2), last]
    assert admission.running == target
    for ticket in tickets:
        ticket.release()


async def test_the_window_closes_on_time_and_a_busy_engine_skips_it() -> None:
    load = EngineLoad(8)
    admission = AdmissionController(max_running=8, max_queued=8, load=load)
    admission.batch_window_s, admission.batch_target = 0.05, 10
    alone = await asyncio.wait_for(admission.admit(DEFAULT), 5)  # released by the window's end
    assert (admission.running, admission._gathering) == (1, [])
    admission.batch_window_s = 60.0  # a busy engine must not wait for it
    load.observe(running=4, waiting=0)
    busy = await asyncio.wait_for(admission.admit(DEFAULT), 5)  # joins the running batch, no window
    assert (admission.running, admission._gathering) == (2, [])
    alone.release()
    busy.release()
    assert admission.running == 0


async def test_raising_max_running_admits_queued_requests() -> None:
    admission = AdmissionController(max_running=1, max_queued=4)
    await admission.admit(DEFAULT)
    queued = asyncio.create_task(admission.admit(DEFAULT))
    await until(lambda: admission.queued == 1, "one queued")
    admission.set_max_running(2)
    await asyncio.wait_for(queued, 1)
    assert admission.running == 2
