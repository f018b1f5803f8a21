"""Adapters the server starts with (--lora-modules, --adapter-dir) and the --watch-adapters follower."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from adapters.discovery import AdapterSpec, parse_lora_module, scan
from adapters.errors import AdapterError
from adapters.loader import AdapterManager
from adapters.registry import AdapterRegistry
from adapters.types import AdapterState
from adapters.validation import resolve_within_roots
from server.engine.protocol import EngineClient
from server.runtime.base_model import base_model_info

logger = logging.getLogger(__name__)


def allowed_roots(
    adapter_roots: list[Path], adapter_dir: Path | None, specs: list[AdapterSpec]
) -> list[Path]:
    """Roots runtime loads may come from: --adapter-root, --adapter-dir and the startup adapters' folders."""
    roots = list(adapter_roots)
    if adapter_dir is not None:
        roots.append(adapter_dir)
    roots += [Path(spec.path) for spec in specs]
    return roots


class StartupAdaptersError(Exception):
    """Startup adapters failed to load and nothing allows serving without them."""


def refuse_missing_startup_adapters(
    lora_modules: list[str], adapter_dir: Path | None, adapter_roots: list[Path]
) -> None:
    """Refuse, before the model loads, --lora-modules entries that cannot load.

    Those are entries that do not parse and folders that are not there: a replica started with a typo then
    stops in seconds, not after its model load (minutes on a GPU). What needs the base model (shapes, rank,
    targets) is checked when the adapters load after it.

    Raises:
        StartupAdaptersError: One or more cannot load (each is logged).
    """
    specs, failed = _parse(lora_modules)
    roots = allowed_roots(adapter_roots, adapter_dir, specs)
    for spec in specs:
        try:
            resolve_within_roots(spec.path, roots)
        except AdapterError as err:
            failed.append(_failure(spec, err))
    _refuse(failed)


async def start_adapters(
    engine: EngineClient,
    lora_modules: list[str],
    adapter_dir: Path | None,
    adapter_roots: list[Path],
    *,
    allow_missing: bool = False,
    on_change: Callable[[AdapterManager], None] = lambda _: None,
) -> AdapterManager:
    """Build the adapter manager and load the startup adapters.

    An adapter named like the base model is one of those refused (`reserved_name`). `on_change` follows
    every change of the adapters the engine holds (see `AdapterManager`).

    Raises:
        StartupAdaptersError: One or more failed to load (each is logged), unless `allow_missing`: a
            replica that reports healthy must serve every adapter it was started with.
    """
    specs, failed = _parse(lora_modules)
    manager = AdapterManager(
        AdapterRegistry(),
        engine,
        base_model_info(engine.served_model_names, engine.model_path, engine.max_lora_rank),
        allowed_roots(adapter_roots, adapter_dir, specs),
        max_loras=engine.max_loras,
        on_change=on_change,
    )
    if adapter_dir is not None:
        specs += scan(adapter_dir)
    for spec in specs:
        error = await _load(manager, spec)
        if error is not None:
            failed.append(error)
    _refuse(failed, allow_missing=allow_missing)
    return manager


def _parse(lora_modules: list[str]) -> tuple[list[AdapterSpec], list[str]]:
    """The --lora-modules entries that parse, and what is wrong with those that do not."""
    specs, failed = [], []
    for value in lora_modules:
        try:
            specs.append(parse_lora_module(value))
        except ValueError as err:
            failed.append(f"--lora-modules {value!r}: {err}")
    return specs, failed


def _failure(spec: AdapterSpec, err: AdapterError) -> str:
    return f"{spec.name} ({spec.path}): {err.message}"


def _refuse(failed: list[str], *, allow_missing: bool = False) -> None:
    """Log each failure, and raise if there is one that `allow_missing` does not let the server serve past."""
    for error in failed:
        logger.error("adapter not loaded: %s", error)
    if failed and not allow_missing:
        raise StartupAdaptersError(
            f"{len(failed)} startup adapter(s) failed to load (see above); fix them, or pass "
            "--allow-missing-adapters to serve without them"
        )


async def _load(manager: AdapterManager, spec: AdapterSpec) -> str | None:
    """Load one adapter; what went wrong, if anything (never raises for a refused adapter)."""
    try:
        await manager.load(spec.name, spec.path, version=spec.version)
    except AdapterError as err:
        return _failure(spec, err)
    return None


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
            error = await _load(manager, spec)
            if error is not None:
                logger.error("adapter not loaded: %s", error)
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
