"""Adapters the server starts with (--lora-modules, --adapter-dir) and the --watch-adapters follower."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Protocol

from adapters.discovery import AdapterSpec, parse_lora_module, scan
from adapters.errors import AdapterError
from adapters.loader import AdapterEngine, AdapterManager
from adapters.registry import AdapterRegistry
from adapters.types import AdapterState
from server.runtime.base_model import base_model_info
from server.settings import ServerSettings

logger = logging.getLogger(__name__)


class SlottedEngine(AdapterEngine, Protocol):
    """An adapter engine that says how many adapters its slots hold at once."""

    @property
    def max_loras(self) -> int:
        """The engine's adapter slots (`--max-loras`)."""
        ...


def allowed_roots(settings: ServerSettings, specs: list[AdapterSpec]) -> list[Path]:
    """Roots runtime loads may come from: --adapter-root, --adapter-dir and the startup adapters' folders."""
    roots = list(settings.adapter_roots)
    if settings.adapter_dir is not None:
        roots.append(settings.adapter_dir)
    roots += [Path(spec.path) for spec in specs]
    return roots


async def start_adapters(
    settings: ServerSettings, engine: SlottedEngine, served_name: str, model_path: str, max_rank: int
) -> AdapterManager:
    """Build the adapter manager and load the startup adapters; a bad one is logged, not fatal.

    An adapter named like the base model is one of those refused (`reserved_name`).
    """
    specs = []
    for value in settings.lora_modules:
        try:
            specs.append(parse_lora_module(value))
        except ValueError as err:
            logger.error("adapter not loaded: %s", err)
    manager = AdapterManager(
        AdapterRegistry(),
        engine,
        base_model_info(served_name, model_path, max_rank),
        allowed_roots(settings, specs),
        max_loras=engine.max_loras,
    )
    if settings.adapter_dir is not None:
        specs += scan(settings.adapter_dir)
    for spec in specs:
        await _load(manager, spec)
    return manager


async def _load(manager: AdapterManager, spec: AdapterSpec) -> None:
    try:
        await manager.load(spec.name, spec.path, version=spec.version)
    except AdapterError as err:
        logger.error("adapter %s (%s) not loaded: %s", spec.name, spec.path, err.message)


async def reconcile(manager: AdapterManager, directory: Path) -> None:
    """Make the adapters served from `directory` match its folders: load new or changed, unload removed."""
    wanted = {spec.name: spec for spec in await asyncio.to_thread(scan, directory)}
    resolved_dir = await asyncio.to_thread(directory.resolve)
    served_here = {
        entry.ref.name: entry
        for entry in manager.registry.entries()
        if entry.state is AdapterState.READY and entry.ref.path.parent == resolved_dir
    }
    for name, spec in wanted.items():
        entry = served_here.get(name)
        if (
            entry is None
            or entry.ref.path != Path(spec.path)
            or (spec.version is not None and spec.version != entry.ref.version)
        ):
            await _load(manager, spec)
    for name in served_here.keys() - wanted.keys():
        await manager.unload(name)


async def watch_adapter_dir(manager: AdapterManager, directory: Path) -> None:
    """Follow `directory` until cancelled; each batch of changes triggers one reconcile."""
    from watchfiles import awatch  # noqa: PLC0415 - only needed with --watch-adapters

    async for _ in awatch(directory, debounce=500, recursive=True):
        try:
            await reconcile(manager, directory)
        except AdapterError as err:
            logger.error("adapter directory change not applied: %s", err.message)
        except asyncio.CancelledError:
            raise
