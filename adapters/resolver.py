"""Load on first request: a `model` naming an adapter folder under the adapter directory loads it.

As vLLM's filesystem LoRA resolver does, but through the same validated load as the admin API and the
directory watcher (`AdapterManager.load`: name checks, roots, config and weight checks, pin rule).

Invariants:
- A name becomes a path only after `check_name` (no separator, no `..`, no glob character), and only
  as a folder directly under the directory (`discovery.find`); validation then keeps it inside the
  allowed roots (symlinks included).
- Concurrent first requests for one name share one load; a client that leaves does not cancel it for
  the others.
- A folder that failed to load is not tried again until its contents change (a listing of names, sizes
  and modification times), so a client retrying in a loop costs a directory listing, not a load.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from adapters.discovery import find
from adapters.errors import AdapterLoadError, AdapterValidationError
from adapters.loader import AdapterManager
from adapters.validation import check_name

logger = logging.getLogger(__name__)

# What a folder looked like: each entry's name, size and modification time (and the folder's own).
Signature = tuple[tuple[str, int, int], ...]


class FolderResolver:
    """Loads adapters named by requests from the folders of one directory."""

    def __init__(self, manager: AdapterManager, directory: Path) -> None:
        self._manager = manager
        self._directory = directory
        self._loading: dict[str, asyncio.Task[bool]] = {}
        self._failed: dict[str, tuple[Signature, AdapterValidationError | AdapterLoadError]] = {}

    async def resolve(self, name: str) -> bool:
        """Make `name` served if its folder is there; False when there is no such folder.

        Raises:
            AdapterValidationError: The folder is refused (its reason), now or when it last looked so.
            AdapterLoadError: The engine refused it, now or when the folder last looked so.
            AdapterCapacityError: The engine's slots cannot take it now (tried again next time).
        """
        try:
            check_name(name)
        except AdapterValidationError:
            return False  # not an adapter name, so no folder can be it: the caller's 404
        task = self._loading.get(name)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(name))
            self._loading[name] = task
            task.add_done_callback(lambda done: self._loaded(name, done))
        return await asyncio.shield(task)

    def _loaded(self, name: str, task: asyncio.Task[bool]) -> None:
        del self._loading[name]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have left before it ended

    async def _load(self, name: str) -> bool:
        if self._manager.registry.current(name) is not None:
            return True  # loaded meanwhile (the admin API, the watcher, an earlier load)
        spec = await asyncio.to_thread(find, self._directory, name)
        if spec is None:
            return False
        try:
            signature = await asyncio.to_thread(_signature, Path(spec.path))
        except OSError:
            return False  # removed since it was found
        failed = self._failed.get(name)
        if failed is not None and failed[0] == signature:
            raise failed[1].with_traceback(None)
        try:
            await self._manager.load(spec.name, spec.path, version=spec.version)
        except AdapterValidationError as err:
            refused = AdapterValidationError(
                err.reason, f"The adapter folder for model '{name}' was refused: {err.message}"
            )
            self._remember(name, signature, refused)
            raise refused from err
        except AdapterLoadError as err:
            self._remember(name, signature, err)
            raise
        self._failed.pop(name, None)
        logger.info("adapter %s loaded on first request from %s", name, spec.path)
        return True

    def _remember(
        self, name: str, signature: Signature, err: AdapterValidationError | AdapterLoadError
    ) -> None:
        logger.error("adapter %s not loaded on request: %s", name, err.message)
        self._failed[name] = (signature, err)


def resolver_for(
    manager: AdapterManager | None, directory: Path | None, enabled: bool
) -> FolderResolver | None:
    """The resolver of `directory`, when there are adapters, a directory, and loading on request is on."""
    if manager is None or directory is None or not enabled:
        return None
    return FolderResolver(manager, directory)


def _signature(folder: Path) -> Signature:
    # Blocking: called in a worker thread. Rewriting a file in place changes its size or mtime.
    entries = [folder, *sorted(folder.iterdir())]
    return tuple((entry.name, entry.stat().st_size, entry.stat().st_mtime_ns) for entry in entries)
