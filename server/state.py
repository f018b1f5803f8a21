"""The typed `AppState` and the `Depends` getters: the only module that touches `request.app.state`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fastapi import Request
from prometheus_client import CollectorRegistry

from adapters.loader import AdapterManager
from server.accounting import Accounting
from server.errors import EngineUnavailableError
from server.generation import EngineClient


@dataclass
class AppState:
    """What request handlers share, built once by the lifespan."""

    api_key: str | None
    accounting: Accounting
    admin_key: str | None = None
    engine: EngineClient | None = None
    adapters: AdapterManager | None = None
    registry: CollectorRegistry | None = None  # wattserve's metrics; vLLM's live on the process registry
    started_at: float = field(default_factory=time.time)


def get_state(request: Request) -> AppState:
    """The application's state."""
    return request.app.state.wattserve


def get_engine(request: Request) -> EngineClient:
    """The running engine, or a 503 while there is none."""
    engine = get_state(request).engine
    if engine is None:
        raise EngineUnavailableError("The engine is not running.")
    return engine
