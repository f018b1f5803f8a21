"""Adapter records: the immutable `AdapterRef` handed to the engine, and the lifecycle states."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


class AdapterState(str, enum.Enum):
    """Where an adapter version is in its life: loading → ready → draining → unloaded, or failed."""

    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    UNLOADED = "unloaded"
    FAILED = "failed"


@dataclass(frozen=True)
class AdapterFacts:
    """What validation read from an adapter directory."""

    path: Path
    base_model: str | None
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    size_bytes: int
    warnings: tuple[str, ...] = ()  # what fits but may not be meant (a config naming another base model)


@dataclass(frozen=True)
class AdapterRef:
    """One loaded version of an adapter. Immutable; `adapter_id` is never reused in a process."""

    name: str
    version: str
    adapter_id: int
    facts: AdapterFacts

    @property
    def engine_name(self) -> str:
        """The engine-side name: unique per version, so no cache entry of one version serves another."""
        return f"{self.name}@{self.version}#{self.adapter_id}"

    @property
    def path(self) -> Path:
        """The adapter's directory."""
        return self.facts.path


def served_name(engine_name: str) -> str:
    """The name clients use for an engine-side name (`AdapterRef.engine_name`); any other name unchanged.

    Adapter names never hold '@' (`adapters.validation.NAME_PATTERN`), so the first one ends the name.
    """
    name, at, _ = engine_name.partition("@")
    return name if at else engine_name
