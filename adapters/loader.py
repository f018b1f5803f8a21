"""Hot load, replace, pin and unload: validate off the event loop, then the engine, then the registry."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Protocol

from adapters.errors import AdapterLoadError
from adapters.registry import AdapterEntry, AdapterRegistry
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
        self, registry: AdapterRegistry, engine: AdapterEngine, base: BaseModelInfo, roots: list[Path]
    ) -> None:
        self.registry = registry
        self._engine = engine
        self._base = base
        self._roots = roots
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._versions: defaultdict[str, int] = defaultdict(int)
        self._retiring: set[asyncio.Task[None]] = set()

    async def load(
        self, name: str, raw_path: str, *, version: str | None = None, pinned: bool = False
    ) -> AdapterEntry:
        """Load `raw_path` as `name`; if `name` exists, the new version replaces it without a gap.

        New requests go to the new version as soon as it is ready; requests in flight finish on the
        old one, which is then removed from the engine in the background.

        Raises:
            AdapterValidationError: The adapter is refused (see its `reason`).
            AdapterLoadError: The engine refused it.
        """
        check_name(name)
        check_not_reserved(name, self._base)
        if version is not None:
            check_version(version)
        async with self._locks[name]:
            started = time.perf_counter()
            facts = await asyncio.to_thread(self._validate, raw_path)
            self._versions[name] += 1
            ref = AdapterRef(name, version or f"v{self._versions[name]}", self.registry.next_id(), facts)
            entry = self.registry.begin_load(ref, pinned=pinned)
            try:
                await self._engine.add_lora(ref)
                if pinned:
                    await self._engine.pin_lora(ref.adapter_id)
            except Exception as err:
                self.registry.fail(entry, str(err))
                raise AdapterLoadError(f"The engine could not load adapter '{name}': {err}") from err
            previous = self.registry.commit(entry, time.perf_counter() - started)
            logger.info("adapter %s ready (id %d, %s)", ref.engine_name, ref.adapter_id, ref.path)
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
        async with self._locks[name]:
            entry = self.registry.begin_unload(name)
            await self._retire(entry)
            return entry

    async def set_pinned(self, name: str, pinned: bool) -> AdapterEntry:
        """Pin or unpin the current version of `name`."""
        async with self._locks[name]:
            entry = self.registry.set_pinned(name, pinned)
            if pinned:
                await self._engine.pin_lora(entry.ref.adapter_id)
            return entry

    async def drain(self) -> None:
        """Wait for background retirements (at shutdown)."""
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    def _validate(self, raw_path: str) -> AdapterFacts:
        # Blocking file reads: called in a worker thread, off the event loop.
        return validate_adapter(raw_path, self._base, self._roots)

    async def _retire(self, entry: AdapterEntry) -> None:
        await self.registry.wait_drained(entry)
        try:
            await self._engine.remove_lora(entry.ref.adapter_id)
        except Exception:
            # The version stays unreachable (no name routes to it); the engine's LRU will evict it.
            logger.exception("removing adapter %s from the engine failed", entry.ref.engine_name)
        self.registry.finish_unload(entry)
        logger.info("adapter %s unloaded", entry.ref.engine_name)
