"""The source of truth for which adapter versions exist, which one a name serves, and who is using them.

Every method runs on the event loop and none awaits between reading and changing state, so resolving a
name and taking a reference on it is atomic with respect to replacement and unload.

Invariants:
- A name maps to at most one READY version (`current`); only READY versions are handed to new requests.
- A version is committed (made current) only after the engine has loaded it.
- A DRAINING version receives no new requests; it is removed from the engine only once its in-flight
  count is zero, so no request can reach a removed version.
- Adapter ids come from one counter and are never reused while the process lives.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

from adapters.errors import AdapterNotFoundError
from adapters.types import AdapterRef, AdapterState


@dataclass
class AdapterEntry:
    """The mutable catalogue record of one adapter version."""

    ref: AdapterRef
    state: AdapterState = AdapterState.LOADING
    pinned: bool = False
    reason: str | None = None
    loaded_at: float | None = None
    load_seconds: float | None = None
    in_flight: int = 0
    _drained: asyncio.Event = field(default_factory=asyncio.Event, repr=False)


class AdapterRegistry:
    """Adapter versions by id, the current version of each name, and in-flight reference counts."""

    def __init__(self, history: int = 64) -> None:
        self._ids = itertools.count(1)
        self._entries: dict[int, AdapterEntry] = {}
        self._current: dict[str, AdapterEntry] = {}
        self._history = history

    def next_id(self) -> int:
        """A fresh adapter id, never handed out before."""
        return next(self._ids)

    def entries(self) -> list[AdapterEntry]:
        """Every known version, oldest first (unloaded and failed ones are kept for a while)."""
        return sorted(self._entries.values(), key=lambda entry: entry.ref.adapter_id)

    def current(self, name: str) -> AdapterEntry | None:
        """The version `name` serves now, if any."""
        return self._current.get(name)

    def names(self) -> list[str]:
        """Names that serve requests now."""
        return sorted(self._current)

    def acquire(self, name: str) -> AdapterRef:
        """Take a reference on the current version of `name` for one request.

        Raises:
            AdapterNotFoundError: `name` has no ready version.
        """
        entry = self._current.get(name)
        if entry is None:
            raise AdapterNotFoundError(f"The model '{name}' does not exist.")
        entry.in_flight += 1
        entry._drained.clear()
        return entry.ref

    def release(self, ref: AdapterRef) -> None:
        """Drop a request's reference; wakes an unload waiting for the version to drain."""
        entry = self._entries[ref.adapter_id]
        entry.in_flight -= 1
        if entry.in_flight == 0:
            entry._drained.set()

    def begin_load(self, ref: AdapterRef, *, pinned: bool) -> AdapterEntry:
        """Record a version being loaded; it serves nothing until `commit`."""
        entry = AdapterEntry(ref=ref, pinned=pinned)
        self._entries[ref.adapter_id] = entry
        self._trim()
        return entry

    def commit(self, entry: AdapterEntry, load_seconds: float) -> AdapterEntry | None:
        """Make a loaded version current; return the version it replaces, now draining."""
        entry.state, entry.loaded_at, entry.load_seconds = AdapterState.READY, time.time(), load_seconds
        previous = self._current.get(entry.ref.name)
        self._current[entry.ref.name] = entry
        if previous is not None:
            self._start_draining(previous)
        return previous

    def fail(self, entry: AdapterEntry, reason: str) -> None:
        """Mark a version whose load failed."""
        entry.state, entry.reason = AdapterState.FAILED, reason

    def begin_unload(self, name: str) -> AdapterEntry:
        """Stop routing new requests to `name` at once; its version drains.

        Raises:
            AdapterNotFoundError: `name` has no ready version.
        """
        entry = self._current.pop(name, None)
        if entry is None:
            raise AdapterNotFoundError(f"No adapter named '{name}' is loaded.")
        self._start_draining(entry)
        return entry

    async def wait_drained(self, entry: AdapterEntry) -> None:
        """Wait until no request holds a reference on `entry`."""
        while entry.in_flight:
            await entry._drained.wait()

    def finish_unload(self, entry: AdapterEntry) -> None:
        """Record that the engine no longer holds `entry`."""
        entry.state = AdapterState.UNLOADED
        self._trim()

    def set_pinned(self, name: str, pinned: bool) -> AdapterEntry:
        """Flip the pinned flag of the current version of `name`."""
        entry = self._current.get(name)
        if entry is None:
            raise AdapterNotFoundError(f"No adapter named '{name}' is loaded.")
        entry.pinned = pinned
        return entry

    def _start_draining(self, entry: AdapterEntry) -> None:
        entry.state = AdapterState.DRAINING
        if entry.in_flight == 0:
            entry._drained.set()

    def _trim(self) -> None:
        # Keep the history of finished versions bounded; live ones are never dropped.
        finished = [e for e in self.entries() if e.state in (AdapterState.UNLOADED, AdapterState.FAILED)]
        for entry in finished[: max(0, len(finished) - self._history)]:
            del self._entries[entry.ref.adapter_id]
