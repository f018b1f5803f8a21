"""The flex lane: rides along a running batch, fills one on an idle engine, never past its wait bound."""

from __future__ import annotations

import asyncio

import pytest

from server.errors import EngineUnavailableError, OverloadedError
from server.policy.admission import EngineLoad
from server.policy.flex_lane import FlexLane
from tests.waiting import until


class Looks:
    """Counts the lane's looks at who may go (on entry, on an engine step, on each of its ticks)."""

    def __init__(self, flex: FlexLane, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        release = flex._release

        def counted() -> None:
            self.count += 1
            release()

        monkeypatch.setattr(flex, "_release", counted)

    async def more(self, looks: int) -> None:
        """Wait until the lane has looked `looks` more times."""
        target = self.count + looks
        await until(lambda: self.count >= target, f"{looks} more looks of the lane")


async def entered(flex: FlexLane, turns: list[asyncio.Task], count: int) -> None:
    """Wait until `count` of `turns` have come to the lane, whether they wait or went through."""
    await until(lambda: flex.waiting + sum(turn.done() for turn in turns) >= count, f"{count} in the lane")


def lane(load: EngineLoad, **overrides: object) -> FlexLane:
    options = {"max_queued": 8, "max_wait_s": 60.0, "batch_size": 3} | overrides
    return FlexLane(load, **options)  # type: ignore[arg-type]


async def test_rides_along_a_running_batch_up_to_its_room() -> None:
    load = EngineLoad(max_num_seqs=4)
    load.observe(running=2, waiting=0)
    flex = lane(load, riders_per_step=8)
    turns = [asyncio.create_task(flex.wait_turn()) for _ in range(3)]
    await entered(flex, turns, 3)
    released = [turn for turn in turns if turn.done()]
    assert len(released) == 2  # the batch had room for two
    assert flex.waiting == 1
    load.observe(running=3, waiting=0)  # the two joined; one place left
    await asyncio.wait_for(asyncio.gather(*turns), 1)  # the lane's next tick lets the third ride


async def test_riders_board_a_few_per_engine_step(monkeypatch: pytest.MonkeyPatch) -> None:
    load = EngineLoad(max_num_seqs=32)
    load.observe(running=1, waiting=0)
    flex = lane(load, max_queued=16, batch_size=4, riders_per_step=2)
    looks = Looks(flex, monkeypatch)
    turns = [asyncio.create_task(flex.wait_turn()) for _ in range(5)]
    await entered(flex, turns, 5)
    await looks.more(3)  # ticks of the lane, no engine step
    assert [turn.done() for turn in turns] == [True, True, False, False, False]  # oldest first
    for boarded in (4, 5):
        load.observe(running=boarded - 1, waiting=0)  # the riders so far run
        flex.on_step()
        assert flex.waiting == 5 - boarded
        await asyncio.wait_for(asyncio.gather(*turns[:boarded]), 1)
        assert sum(turn.done() for turn in turns) == boarded


async def test_on_an_idle_engine_it_waits_for_a_batch_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    load = EngineLoad(max_num_seqs=8)
    flex = lane(load)
    looks = Looks(flex, monkeypatch)
    first = [asyncio.create_task(flex.wait_turn()) for _ in range(2)]
    await entered(flex, first, 2)
    await looks.more(2)  # ticks of the lane
    assert not any(turn.done() for turn in first)  # idle engine, two of three
    third = await asyncio.wait_for(flex.wait_turn(), 1)
    await asyncio.wait_for(asyncio.gather(*first), 1)  # the third made a batch: all three go
    assert third[1] is False


async def test_never_past_the_wait_bound_and_full_is_429() -> None:
    load = EngineLoad(max_num_seqs=8)
    load.observe(running=8, waiting=4)  # no room at all
    flex = lane(load, max_queued=2, max_wait_s=0.2)
    turns = [asyncio.create_task(flex.wait_turn()) for _ in range(2)]
    await until(lambda: flex.waiting == 2, "two in the lane")
    with pytest.raises(OverloadedError):
        await flex.wait_turn()
    await asyncio.wait_for(asyncio.gather(*turns), 2)  # released by the bound, room or not


async def test_the_carbon_gate_holds_until_the_bound_or_a_cleaner_grid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load = EngineLoad(max_num_seqs=8)
    load.observe(running=1, waiting=0)
    dirty = [True]
    flex = lane(load, carbon_hold=lambda: dirty[0])
    looks = Looks(flex, monkeypatch)
    turn = asyncio.create_task(flex.wait_turn())
    await until(lambda: flex.waiting == 1, "the request in the lane")
    await looks.more(2)  # ticks of the lane, the batch with room all along
    assert not turn.done()
    dirty[0] = False
    _, held_by_carbon = await asyncio.wait_for(turn, 1)
    assert held_by_carbon


async def test_close_answers_the_lane_503() -> None:
    flex = lane(EngineLoad(max_num_seqs=8))
    turn = asyncio.create_task(flex.wait_turn())
    await until(lambda: flex.waiting == 1, "the request in the lane")
    flex.close()
    with pytest.raises(EngineUnavailableError):
        await turn
    assert flex.waiting == 0


async def test_an_idle_engine_takes_a_batch_even_after_a_rider_vanished() -> None:
    load = EngineLoad(max_num_seqs=8)
    load.let_in = 1  # let out towards the engine, gone before it got there: no step will reset it
    flex = lane(load)
    turns = [asyncio.create_task(flex.wait_turn()) for _ in range(3)]
    await asyncio.wait_for(asyncio.gather(*turns), 1)  # released as a batch, long before the wait bound
