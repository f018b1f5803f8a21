"""Admission: bounded slots and queue, tier order, a flex request's arrival kept, the batching window."""

from __future__ import annotations

import asyncio

import pytest

from server.errors import EngineUnavailableError, OverloadedError
from server.policy.admission import AdmissionController, EngineLoad


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_full_queue_is_429_with_retry_after() -> None:
    admission = AdmissionController(max_running=1, max_queued=1)
    held = await admission.admit("default")
    queued = asyncio.create_task(admission.admit("default"))
    await settle()
    with pytest.raises(OverloadedError) as caught:
        await admission.admit("default")
    assert caught.value.headers["Retry-After"].isdigit()
    held.release()
    (await queued).release()
    assert (admission.running, admission.queued) == (0, 0)


async def test_priority_goes_first_then_arrival_order_with_flex_keeping_its_arrival() -> None:
    admission = AdmissionController(max_running=1, max_queued=10)
    held = await admission.admit("default")
    order: list[str] = []

    async def wait(name: str, tier: str, arrival_s: float | None = None) -> None:
        ticket = await admission.admit(tier, arrival_s)
        order.append(name)
        ticket.release()

    tasks = [asyncio.create_task(wait("default-1", "default"))]
    await settle()
    tasks.append(asyncio.create_task(wait("flex-from-long-ago", "flex", arrival_s=1.0)))
    await settle()
    tasks.append(asyncio.create_task(wait("priority", "priority")))
    await settle()
    held.release()
    await asyncio.gather(*tasks)
    assert order == ["priority", "flex-from-long-ago", "default-1"]


async def test_a_waiter_that_leaves_frees_its_place_and_a_given_slot_is_passed_on() -> None:
    admission = AdmissionController(max_running=1, max_queued=2)
    held = await admission.admit("default")
    leaving = asyncio.create_task(admission.admit("default"))
    staying = asyncio.create_task(admission.admit("default"))
    await settle()
    leaving.cancel()
    await settle()
    assert admission.queued == 1
    held.release()
    (await staying).release()
    assert (admission.running, admission.queued) == (0, 0)


async def test_close_answers_queued_and_new_requests_503() -> None:
    admission = AdmissionController(max_running=1, max_queued=2)
    await admission.admit("default")
    queued = asyncio.create_task(admission.admit("default"))
    await settle()
    admission.close()
    with pytest.raises(EngineUnavailableError):
        await queued
    with pytest.raises(EngineUnavailableError):
        await admission.admit("default")


async def test_the_batching_window_gathers_companions_on_an_idle_engine() -> None:
    admission = AdmissionController(max_running=8, max_queued=8, load=EngineLoad(8))
    admission.batch_window_s, admission.batch_target = 10.0, 3
    first = asyncio.create_task(admission.admit("default"))
    second = asyncio.create_task(admission.admit("default"))
    await settle()
    assert not first.done()  # waiting for a third companion (or the window)
    third = await admission.admit("default")
    tickets = [await first, await second, third]
    assert admission.running == 3
    for ticket in tickets:
        ticket.release()


async def test_the_window_closes_on_time_and_a_busy_engine_skips_it() -> None:
    load = EngineLoad(8)
    admission = AdmissionController(max_running=8, max_queued=8, load=load)
    admission.batch_window_s, admission.batch_target = 0.05, 10
    alone = await asyncio.wait_for(admission.admit("default"), 5)  # released by the window's end
    load.observe(True, running=4, waiting=0)
    busy = await asyncio.wait_for(admission.admit("default"), 0.01)  # joins the running batch at once
    alone.release()
    busy.release()


async def test_raising_max_running_admits_queued_requests() -> None:
    admission = AdmissionController(max_running=1, max_queued=4)
    await admission.admit("default")
    queued = asyncio.create_task(admission.admit("default"))
    await settle()
    admission.set_max_running(2)
    await asyncio.wait_for(queued, 1)
    assert admission.running == 2
