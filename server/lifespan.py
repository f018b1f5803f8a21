"""Startup and shutdown order: build the engine before the first request, stop it after the last."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from server.adapter_startup import start_adapters, watch_adapter_dir
from server.energy.meters.base import EnergyMeter
from server.energy.sampler import EnergySampler
from server.generation import EngineClient
from server.settings import ServerSettings
from server.state import AppState

logger = logging.getLogger(__name__)


def make_lifespan(
    state: AppState,
    settings: ServerSettings,
    start_engine: Callable[[], EngineClient],
    stop_engine: Callable[[EngineClient], None],
    meter: EnergyMeter,
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan that starts the engine and its adapters, publishes them in `state`, and stops them."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.wattserve = state
        # Blocking on purpose: nothing can be served until the model is loaded, and uvicorn only
        # starts listening once this returns, so clients never see a half-started server.
        engine = start_engine()
        state.engine = engine
        logger.info("serving %s (max_model_len=%d)", engine.served_model_name, engine.max_model_len)
        watcher = None
        if meter.source != "none":
            sampler = EnergySampler(
                meter,
                state.accounting.on_reading,
                asyncio.get_running_loop(),
                settings.energy_sample_period_s,
            )
            state.accounting.sampler = sampler
            sampler.start()
            logger.info("energy meter: %s (%s)", meter.source, ", ".join(meter.devices))
        if getattr(engine, "lora_enabled", False):
            state.adapters = await start_adapters(
                settings, engine, engine.served_model_name, engine.model_path, engine.max_lora_rank
            )
            for name in state.adapters.registry.names():
                state.accounting.metrics.adapter_added(name)
            if settings.watch_adapters and settings.adapter_dir is not None:
                watcher = asyncio.create_task(watch_adapter_dir(state.adapters, settings.adapter_dir))
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
            if state.adapters is not None:
                await state.adapters.drain()
            state.engine = None
            if state.accounting.sampler is not None:
                state.accounting.sampler.stop()
            stop_engine(engine)

    return lifespan
