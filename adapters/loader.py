"""Hot load, replace, pin and unload: validate off the event loop, then the engine, then the registry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol

from adapters.errors import AdapterLoadError, AdapterNotFoundError
from adapters.registry import AdapterEntry, AdapterRegistry
from adapters.slots import EngineSlots
from adapters.types import AdapterFacts, AdapterRef
from adapters.validation import BaseModelInfo, check_name, check_not_reserved, check_version, validate_adapter

logger = logging.getLogger(__name__)


class AdapterEngine(Protocol):
    """What the loader needs from the engine; the vLLM engine satisfies it structurally."""

    async def add_lora(self, ref: AdapterRef) -> None:
        """Load a version into the engine; raise if the engine refuses it."""
        ...

    async def remove_lora(self, adapter_id: int) -> None:
        """Drop a version from the engine's caches."""
        ...

    async def pin_lora(self, adapter_id: int) -> None:
        """Keep a version resident (never evicted by the engine's LRU)."""
        ...


class AdapterManager:
    """Serializes changes per adapter name; changes to different names run side by side."""

    def __init__(
        self,
        registry: AdapterRegistry,
        engine: AdapterEngine,
        base: BaseModelInfo,
        roots: list[Path],
        *,
        max_loras: int,
        on_change: Callable[[AdapterManager], None] = lambda _: None,
    ) -> None:
        """Manage adapters of `engine`, whose adapter slots (`--max-loras`) number `max_loras`.

        `on_change` is called, on the event loop, after every load (done or failed), pin and unload.
        """
        self.registry = registry
        self._engine = engine
        self._base = base
        self._roots = roots
        self.slots = EngineSlots(max_loras)
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._versions: defaultdict[str, int] = defaultdict(int)
        self._retiring: set[asyncio.Task[None]] = set()
        self._on_change = on_change

    async def load(
        self, name: str, raw_path: str, *, version: str | None = None, pinned: bool = False
    ) -> AdapterEntry:
        """Load `raw_path` as `name`; if `name` exists, the new version replaces it without a gap.

        New requests go to the new version as soon as it is ready; requests in flight finish on the
        old one, which is then removed from the engine in the background.

        Raises:
            AdapterValidationError: The adapter is refused (see its `reason`).
            AdapterCapacityError: The engine's slots cannot hold it next to the pinned versions.
            AdapterLoadError: The engine refused it.
        """
        check_name(name)
        check_not_reserved(name, self._base)
        if version is not None:
            check_version(version)
        async with self._locks[name], self._changing():
            started = time.perf_counter()
            facts = await asyncio.to_thread(self._validate, raw_path)
            adapter_id = self.registry.next_id()
            # Before the engine sees it; a replaced version keeps its slot until it is retired.
            self.slots.reserve(adapter_id, pinned=pinned)
            self._versions[name] += 1
            ref = AdapterRef(name, version or f"v{self._versions[name]}", adapter_id, facts)
            entry = self.registry.begin_load(ref, pinned=pinned)
            try:
                await self._engine.add_lora(ref)
            except Exception as err:
                self.slots.release(adapter_id)
                self.registry.fail(entry, str(err))
                raise AdapterLoadError(f"The engine could not load adapter '{name}': {err}") from err
            if pinned:
                try:
                    await self._engine.pin_lora(adapter_id)
                except Exception as err:
                    self.registry.fail(entry, str(err))
                    await self._remove_from_engine(entry)
                    raise AdapterLoadError(f"The engine could not pin adapter '{name}': {err}") from err
            previous = self.registry.commit(entry, time.perf_counter() - started)
            logger.info("adapter %s ready (id %d, %s)", ref.engine_name, ref.adapter_id, ref.path)
            for warning in facts.warnings:
                logger.warning("adapter %s: %s", ref.engine_name, warning)
            if previous is not None:
                task = asyncio.create_task(self._retire(previous))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
            return entry

    async def unload(self, name: str) -> AdapterEntry:
        """Stop routing to `name` at once, wait for its in-flight requests, then remove it from the engine.

        Raises:
            AdapterNotFoundError: No adapter of that name is loaded.
        """
        async with self._locks[name], self._changing():
            entry = self.registry.begin_unload(name)
            await self._retire(entry)
            return entry

    async def set_pinned(self, name: str, pinned: bool) -> AdapterEntry:
        """Pin or unpin the current version of `name`.

        Unpinning clears the flag only: vLLM has no unpin, so the version stays pinned in the engine,
        and counts as pinned in `slots`, until it is replaced or unloaded.

        Raises:
            AdapterNotFoundError: No adapter of that name is loaded.
            AdapterCapacityError: Pinning it would break the pin rule of `adapters.slots`.
            AdapterLoadError: The engine refused the pin.
        """
        async with self._locks[name], self._changing():
            entry = self.registry.current(name)
            if entry is None:
                raise AdapterNotFoundError(f"No adapter named '{name}' is loaded.")
            if pinned:
                self.slots.pin(entry.ref.adapter_id)
                try:
                    await self._engine.pin_lora(entry.ref.adapter_id)
                except Exception as err:
                    # It stays counted as pinned: the engine may have pinned it in one cache already.
                    raise AdapterLoadError(f"The engine could not pin adapter '{name}': {err}") from err
            return self.registry.set_pinned(name, pinned)

    async def drain(self) -> None:
        """Wait for background retirements (at shutdown)."""
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    def _validate(self, raw_path: str) -> AdapterFacts:
        # Blocking file reads: called in a worker thread, off the event loop.
        return validate_adapter(raw_path, self._base, self._roots)

    async def _remove_from_engine(self, entry: AdapterEntry) -> None:
        try:
            await self._engine.remove_lora(entry.ref.adapter_id)
        except Exception:
            # The version stays unreachable (no name routes to it) but may still hold a slot, pinned
            # or until the engine's LRU evicts it, so it keeps counting in `slots`.
            logger.exception("removing adapter %s from the engine failed", entry.ref.engine_name)
        else:
            self.slots.release(entry.ref.adapter_id)

    async def _retire(self, entry: AdapterEntry) -> None:
        await self.registry.wait_drained(entry)
        await self._remove_from_engine(entry)
        self.registry.finish_unload(entry)
        logger.info("adapter %s unloaded", entry.ref.engine_name)
        self._on_change(self)  # a replaced version leaves the engine's slots

    @contextlib.asynccontextmanager
    async def _changing(self) -> AsyncIterator[None]:
        # However the change ended (done, refused, cancelled), observers see the state it left.
        try:
            yield
        finally:
            self._on_change(self)
