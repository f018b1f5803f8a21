"""`create_app`: the composition root that wires routes, error handling, state, energy and the engine."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CollectorRegistry

from server.api.auth import KeyMiddleware
from server.api.body_limit import BodyLimitMiddleware
from server.api.lifespan import make_lifespan
from server.api.routes import adapters, chat, completions, energy, health, models
from server.api.state import AppState
from server.energy.books import EnergyBooks
from server.energy.carbon import CarbonModel
from server.energy.floor import IdleFloor
from server.energy.intensity import IntensitySource
from server.energy.ledger import EnergyLedger
from server.energy.meters.base import EnergyMeter
from server.energy.meters.select import open_meter
from server.energy.summary import EnergySummaryExporter
from server.errors import install_error_handlers, openapi_without_422
from server.observability.metrics import BASE_LABEL, ServerMetrics
from server.runtime.lifecycle import Lifecycle
from server.serving.prepare import EngineClient
from server.settings import ServerSettings


def _no_stop(_: EngineClient) -> None:
    return None


def _engine_healthy(state: AppState) -> float:
    # The engine is set once started and cleared at shutdown; vLLM's flags its death.
    return 0.0 if state.engine is None or getattr(state.engine, "is_dead", False) else 1.0


def create_app(
    settings: ServerSettings,
    start_engine: Callable[[], EngineClient],
    stop_engine: Callable[[EngineClient], None] = _no_stop,
    meter: EnergyMeter | None = None,
) -> FastAPI:
    """Build the FastAPI application.

    Args:
        settings: The server's own settings.
        start_engine: Called once at startup; returns the engine to serve with.
        stop_engine: Called once at shutdown with that engine.
        meter: The energy meter; by default the one `settings.energy_meter` names.

    Returns:
        The application, ready for uvicorn or an ASGI test transport.
    """
    if meter is None:
        meter = open_meter(
            settings.energy_meter,
            cuda_visible_devices=settings.cuda_visible_devices,
            watts_per_core=settings.estimated_watts_per_core,
        )
    headers = dict(header.split(":", 1) for header in settings.grid_intensity_headers if ":" in header)
    intensity = IntensitySource(
        settings.grid_intensity_source,
        settings.grid_intensity_g_per_kwh,
        {name.strip(): value.strip() for name, value in headers.items()},
    )
    carbon = CarbonModel(intensity, settings.pue)
    registry = CollectorRegistry()
    metrics = ServerMetrics(registry, meter.source, list(meter.devices))
    metrics.adapter_added(BASE_LABEL)
    metrics.grid_intensity.set_function(lambda: carbon.grid_g_per_kwh)
    summary = EnergySummaryExporter(meter.source, list(meter.devices), carbon)
    ledger = EnergyLedger(
        settings.prefill_energy_weight,
        settings.decode_energy_weight,
        IdleFloor(min_idle_s=settings.idle_floor_min_seconds),
        carbon.grams_per_joule_at,
    )
    books = EnergyBooks(ledger, meter.source, meter.devices, [metrics, summary])
    state = AppState(
        registry=registry,
        metrics=metrics,
        books=books,
        energy_summary=summary,
        carbon=carbon,
        lifecycle=Lifecycle(settings.shutdown_grace_seconds),
    )
    docs = {"docs_url": None, "redoc_url": None, "openapi_url": None} if settings.disable_fastapi_docs else {}
    app = FastAPI(
        title="wattserve",
        summary="OpenAI-compatible LLM server on vLLM with energy per token",
        lifespan=make_lifespan(state, settings, start_engine, stop_engine, meter),
        root_path=settings.root_path,
        **docs,
    )
    app.state.wattserve = state
    metrics.engine_healthy.set_function(lambda: _engine_healthy(state))
    install_error_handlers(app)
    app.openapi = openapi_without_422(app)
    # The last added runs first: keys are checked before the body is even counted.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_body_bytes)
    app.add_middleware(KeyMiddleware, api_key=settings.api_key, admin_key=settings.admin_key)
    if settings.allowed_origins:
        # Outermost, so a browser's preflight (which carries no key) is answered before the key check.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=settings.allowed_methods,
            allow_headers=settings.allowed_headers,
            allow_credentials=settings.allow_credentials,
        )
    for module in (chat, completions, models, adapters, energy, health):
        app.include_router(module.router)
    return app
