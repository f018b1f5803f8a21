"""The adapter registry's state machine and the loader's ordering, with a fake engine."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

from adapters.errors import AdapterLoadError, AdapterNotFoundError
from adapters.loader import AdapterManager
from adapters.registry import AdapterEntry, AdapterRegistry
from adapters.types import AdapterFacts, AdapterRef, AdapterState
from adapters.validation import BaseModelInfo
from tests.waiting import until


def ref(registry: AdapterRegistry, name: str = "a", version: str = "v1") -> AdapterRef:
    facts = AdapterFacts(Path("/x"), None, 8, 16.0, ("q_proj",), 1)
    return AdapterRef(name, version, registry.next_id(), facts)


async def test_replacement_routes_new_requests_at_once_and_drains_the_old_version() -> None:
    registry = AdapterRegistry()
    old = registry.begin_load(ref(registry), pinned=False)
    registry.commit(old, 0.1)
    held = registry.acquire("a")
    new = registry.begin_load(ref(registry, version="v2"), pinned=False)
    assert registry.commit(new, 0.1) is old
    assert old.state is AdapterState.DRAINING
    assert registry.acquire("a").version == "v2"
    waiter = asyncio.create_task(registry.wait_drained(old))
    await until(
        lambda: inspect.getcoroutinestate(waiter.get_coro()) != inspect.CORO_CREATED, "the waiter starting"
    )
    assert not waiter.done()  # it began, and a held request keeps it waiting
    registry.release(held)
    await asyncio.wait_for(waiter, 1)


def test_unload_refuses_new_requests_at_once() -> None:
    registry = AdapterRegistry()
    registry.commit(registry.begin_load(ref(registry), pinned=False), 0.1)
    registry.begin_unload("a")
    with pytest.raises(AdapterNotFoundError):
        registry.acquire("a")
    with pytest.raises(AdapterNotFoundError):
        registry.begin_unload("a")


def test_ids_are_never_reused() -> None:
    registry = AdapterRegistry(history=1)
    ids = [ref(registry).adapter_id for _ in range(100)]
    assert len(set(ids)) == 100


class FakeEngine:
    def __init__(self, fail: bool = False) -> None:
        self.loaded: set[int] = set()
        self.events: list[str] = []
        self.fail = fail

    async def add_lora(self, ref: AdapterRef) -> None:
        if self.fail:
            raise RuntimeError("no such file")
        self.loaded.add(ref.adapter_id)
        self.events.append(f"add {ref.engine_name}")

    async def remove_lora(self, adapter_id: int) -> None:
        self.loaded.discard(adapter_id)
        self.events.append(f"remove {adapter_id}")

    async def pin_lora(self, adapter_id: int) -> None:
        self.events.append(f"pin {adapter_id}")


def manager(
    engine: FakeEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_loras: int = 4
) -> AdapterManager:
    facts = AdapterFacts(tmp_path, None, 8, 16.0, ("q_proj",), 1)
    monkeypatch.setattr(AdapterManager, "_validate", lambda self, raw: facts)
    base = BaseModelInfo(frozenset({"m"}), None, 8)
    return AdapterManager(AdapterRegistry(), engine, base, [tmp_path], max_loras=max_loras)


async def test_old_version_leaves_the_engine_only_after_its_last_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine()
    adapters = manager(engine, tmp_path, monkeypatch)
    waited_on: list[int] = []
    wait_drained = adapters.registry.wait_drained

    async def recorded_wait(entry: AdapterEntry) -> None:
        waited_on.append(entry.ref.adapter_id)
        await wait_drained(entry)

    monkeypatch.setattr(adapters.registry, "wait_drained", recorded_wait)
    first = await adapters.load("a", str(tmp_path))
    held = adapters.registry.acquire("a")
    await adapters.load("a", str(tmp_path))
    # The retirement runs in the background; once it has asked to wait, a removal that did not wait
    # would already have happened.
    await until(lambda: first.ref.adapter_id in waited_on, "the old version's retirement begun")
    assert first.ref.adapter_id in engine.loaded
    adapters.registry.release(held)
    await adapters.drain()
    assert first.ref.adapter_id not in engine.loaded
    assert first.state is AdapterState.UNLOADED


async def test_failed_engine_load_is_recorded_and_the_name_keeps_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine()
    adapters = manager(engine, tmp_path, monkeypatch)
    await adapters.load("a", str(tmp_path))
    engine.fail = True
    with pytest.raises(AdapterLoadError):
        await adapters.load("a", str(tmp_path))
    assert adapters.registry.acquire("a").version == "v1"
    assert [e.state for e in adapters.registry.entries()] == [AdapterState.READY, AdapterState.FAILED]


async def test_loads_of_one_name_are_serialized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine()
    adapters = manager(engine, tmp_path, monkeypatch)
    await asyncio.gather(*(adapters.load("a", str(tmp_path)) for _ in range(5)))
    await adapters.drain()
    assert [e.ref.version for e in adapters.registry.entries()] == ["v1", "v2", "v3", "v4", "v5"]
    assert len(engine.loaded) == 1
