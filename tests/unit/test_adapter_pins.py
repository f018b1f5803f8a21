"""The pin rule (adapters.slots) through the loader, against a model of vLLM's LoRA slot caches."""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.errors import AdapterCapacityError, AdapterLoadError, AdapterNotFoundError, Reason
from adapters.loader import AdapterManager
from adapters.registry import AdapterRegistry
from adapters.slots import EngineSlots
from adapters.types import AdapterFacts, AdapterRef, AdapterState
from adapters.validation import BaseModelInfo
from tests.unit.fake_lora_slots import VllmSlotModel
from tests.waiting import until

FACTS = AdapterFacts(Path("/adapters/x"), None, 8, 16.0, ("q_proj",), 1)


class StubbedManager(AdapterManager):
    def _validate(self, raw_path: str) -> AdapterFacts:
        return FACTS


def manager(engine: VllmSlotModel) -> AdapterManager:
    base = BaseModelInfo(frozenset({"base"}), None, 8)
    return StubbedManager(AdapterRegistry(), engine, base, [Path("/adapters")], max_loras=engine.max_loras)


async def capacity_reason(call) -> Reason:  # noqa: ANN001
    with pytest.raises(AdapterCapacityError) as caught:
        await call
    return caught.value.reason


def live_ids(adapters: AdapterManager) -> list[int]:
    states = (AdapterState.READY, AdapterState.DRAINING)
    return [e.ref.adapter_id for e in adapters.registry.entries() if e.state in states]


def drained_but_live(adapters: AdapterManager) -> list[int]:
    """Versions that no request holds any more but that are not yet retired from the engine."""
    entries = adapters.registry.entries()
    return [e.ref.adapter_id for e in entries if e.state is AdapterState.DRAINING and not e.in_flight]


def test_the_model_reproduces_why_one_free_slot_is_not_enough() -> None:
    # Two slots, one pinned: two unpinned adapters in one batch evict each other (a KeyError in vLLM).
    engine = VllmSlotModel(max_loras=2)
    for adapter_id in (1, 2, 3):
        asyncio.run(engine.add_lora(_ref(adapter_id)))
    asyncio.run(engine.pin_lora(1))
    with pytest.raises(KeyError):
        engine.step([2, 3])


def test_the_model_reproduces_all_items_pinned() -> None:
    engine = VllmSlotModel(max_loras=2)
    for adapter_id in (1, 2):
        asyncio.run(engine.add_lora(_ref(adapter_id)))
        asyncio.run(engine.pin_lora(adapter_id))
    with pytest.raises(RuntimeError, match="All items are pinned"):
        asyncio.run(engine.add_lora(_ref(3)))


def _ref(adapter_id: int) -> AdapterRef:
    return AdapterRef("a", "v1", adapter_id, FACTS)


async def test_pins_fill_the_slots_and_the_next_pin_is_refused_before_the_engine_sees_it() -> None:
    engine = VllmSlotModel(max_loras=2)
    adapters = manager(engine)
    await adapters.load("a", "/adapters/a", pinned=True)
    await adapters.load("b", "/adapters/b", pinned=True)
    seen = list(engine.events)
    assert await capacity_reason(adapters.load("c", "/adapters/c", pinned=True)) is Reason.PIN_LIMIT
    assert await capacity_reason(adapters.load("c", "/adapters/c")) is Reason.SLOTS_FULL
    assert engine.events == seen
    assert adapters.registry.names() == ["a", "b"]
    engine.step(live_ids(adapters))


async def test_with_a_pin_unpinned_loads_stop_at_the_slot_count() -> None:
    engine = VllmSlotModel(max_loras=2)
    adapters = manager(engine)
    await adapters.load("a", "/adapters/a", pinned=True)
    await adapters.load("b", "/adapters/b")
    assert await capacity_reason(adapters.load("c", "/adapters/c")) is Reason.SLOTS_FULL
    engine.step(live_ids(adapters))


async def test_without_pins_there_is_no_limit_but_pinning_then_needs_everything_to_fit() -> None:
    engine = VllmSlotModel(max_loras=2, max_cpu_loras=8)
    adapters = manager(engine)
    for name in "abc":
        await adapters.load(name, f"/adapters/{name}")
    assert await capacity_reason(adapters.set_pinned("a", True)) is Reason.PIN_LIMIT
    assert adapters.registry.current("a").pinned is False
    assert not any(event.startswith("pin") for event in engine.events)
    await adapters.unload("c")
    assert (await adapters.set_pinned("a", True)).pinned is True
    await adapters.set_pinned("a", True)  # pinning twice takes nothing more
    assert adapters.slots.pinned == 1


async def test_replacing_a_pinned_adapter_counts_old_and_new_until_the_old_one_drains() -> None:
    engine = VllmSlotModel(max_loras=3)
    adapters = manager(engine)
    await adapters.load("a", "/adapters/a", pinned=True)
    await adapters.load("b", "/adapters/b")
    held = adapters.registry.acquire("a")
    await adapters.load("a", "/adapters/a2", pinned=True)  # old a, new a, b: 3 slots
    assert adapters.slots.held == 3
    assert await capacity_reason(adapters.load("a", "/adapters/a3", pinned=True)) is Reason.PIN_LIMIT
    assert await capacity_reason(adapters.load("b", "/adapters/b2")) is Reason.SLOTS_FULL
    engine.step(live_ids(adapters))
    adapters.registry.release(held)
    await adapters.drain()
    assert (adapters.slots.held, adapters.slots.pinned) == (2, 1)
    await adapters.load("b", "/adapters/b2")
    await adapters.drain()
    engine.step(live_ids(adapters))


async def test_unpin_keeps_the_engine_pin_counted_and_unload_frees_it() -> None:
    engine = VllmSlotModel(max_loras=1)
    adapters = manager(engine)
    await adapters.load("a", "/adapters/a", pinned=True)
    await adapters.set_pinned("a", False)
    assert await capacity_reason(adapters.load("b", "/adapters/b")) is Reason.SLOTS_FULL
    await adapters.unload("a")
    await adapters.load("b", "/adapters/b", pinned=True)
    assert (adapters.slots.held, adapters.slots.pinned) == (1, 1)


async def test_concurrent_pins_cannot_both_take_the_last_slot() -> None:
    engine = VllmSlotModel(max_loras=2)
    adapters = manager(engine)
    await adapters.load("a", "/adapters/a", pinned=True)
    results = await asyncio.gather(
        *(adapters.load(name, f"/adapters/{name}", pinned=True) for name in "bc"), return_exceptions=True
    )
    assert sorted(type(result).__name__ for result in results) == ["AdapterCapacityError", "AdapterEntry"]
    engine.step(live_ids(adapters))


class FailingEngine(VllmSlotModel):
    def __init__(self, fail: str) -> None:
        super().__init__(max_loras=1)
        self.fail = fail

    async def add_lora(self, ref) -> None:  # noqa: ANN001
        if self.fail == "add":
            raise RuntimeError("cannot read weights")
        await super().add_lora(ref)

    async def pin_lora(self, adapter_id: int) -> None:
        if self.fail == "pin":
            raise RuntimeError("cannot pin")
        await super().pin_lora(adapter_id)


@pytest.mark.parametrize("fail", ["add", "pin"])
async def test_a_failed_load_gives_its_slot_back(fail: str) -> None:
    engine = FailingEngine(fail)
    adapters = manager(engine)
    with pytest.raises(AdapterLoadError):
        await adapters.load("a", "/adapters/a", pinned=True)
    assert (adapters.slots.held, adapters.slots.pinned) == (0, 0)
    assert not engine.cpu
    engine.fail = ""
    await adapters.load("b", "/adapters/b", pinned=True)


async def test_pin_of_an_unknown_name_is_not_found() -> None:
    adapters = manager(VllmSlotModel(max_loras=1))
    with pytest.raises(AdapterNotFoundError):
        await adapters.set_pinned("nothing", True)


def test_slots_alone() -> None:
    slots = EngineSlots(max_loras=2)
    slots.reserve(1, pinned=False)
    slots.reserve(2, pinned=False)
    slots.reserve(3, pinned=False)  # no pin: the engine's LRU swaps them
    with pytest.raises(AdapterCapacityError):
        slots.pin(1)
    slots.release(3)
    slots.pin(1)
    with pytest.raises(AdapterCapacityError):
        slots.reserve(4, pinned=False)
    slots.release(1)
    assert (slots.held, slots.pinned) == (1, 0)


NAMES = st.sampled_from("abcd")
ACTIONS = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["load", "load", "load", "pin", "unload", "hold", "release"]),
            NAMES,
            st.booleans(),
        ),
        # A batch: the scheduler takes up to max_loras distinct adapters, in any order (a seed shuffles).
        st.tuples(st.just("step"), st.integers(0, 2**16), st.booleans()),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(max_loras=st.integers(1, 3), extra_cpu=st.integers(0, 2), actions=ACTIONS)
def test_no_sequence_of_loads_pins_and_batches_breaks_the_engine(
    max_loras: int, extra_cpu: int, actions: list[tuple]
) -> None:
    asyncio.run(_play(VllmSlotModel(max_loras, max_loras + extra_cpu), actions))


async def _play(engine: VllmSlotModel, actions: list[tuple]) -> None:
    adapters = manager(engine)
    held: list[AdapterRef] = []
    versions = itertools.count()
    for action, subject, flag in actions:
        try:
            if action == "load":
                await adapters.load(subject, f"/adapters/{subject}{next(versions)}", pinned=flag)
            elif action == "pin":
                await adapters.set_pinned(subject, flag)
            elif action == "unload" and not any(ref.name == subject for ref in held):
                await adapters.unload(subject)  # (with a request held it would wait for its release)
            elif action == "hold":
                held.append(adapters.registry.acquire(subject))
            elif action == "release" and held:
                adapters.registry.release(held.pop(0))
        except (AdapterCapacityError, AdapterNotFoundError):
            pass
        await until(lambda: not drained_but_live(adapters), "the retirement of drained versions")
        if action == "step":
            live = live_ids(adapters)
            engine.step_every_batch(live)
            random.Random(subject).shuffle(live)
            engine.step(live[: engine.max_loras])
    for ref in held:
        adapters.registry.release(ref)
    await adapters.drain()
