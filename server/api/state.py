"""The typed `AppState` and the `Depends` getters: the only module that touches `request.app.state`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fastapi import Request
from prometheus_client import CollectorRegistry

from adapters.loader import AdapterManager
from server.energy.books import EnergyBooks
from server.energy.carbon import CarbonModel
from server.energy.summary import EnergySummaryExporter
from server.errors import EngineUnavailableError
from server.observability.metrics import ServerMetrics
from server.runtime.lifecycle import Lifecycle
from server.serving.intake import RequestScopes
from server.serving.prepare import EngineClient


@dataclass
class AppState:
    """What request handlers share: built by `create_app`, completed by the lifespan."""

    registry: CollectorRegistry  # wattserve's metrics; vLLM's live on the process registry
    metrics: ServerMetrics
    books: EnergyBooks
    energy_summary: EnergySummaryExporter
    carbon: CarbonModel
    lifecycle: Lifecycle
    engine: EngineClient | None = None
    adapters: AdapterManager | None = None
    scopes: RequestScopes | None = None
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


def get_scopes(request: Request) -> RequestScopes:
    """Where generation requests open their scope, or a 503 while the server cannot take them."""
    scopes = get_state(request).scopes
    if scopes is None:
        raise EngineUnavailableError("The engine is not running.")
    return scopes
