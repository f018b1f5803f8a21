"""Startup and shutdown order: build the engine before the first request, stop it after the last."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI

from server.api.state import AppState
from server.energy.meters.base import EnergyMeter
from server.energy.sampler import EnergySampler
from server.observability.metrics import Status
from server.policy.serving_policy import start_policy
from server.runtime.startup_adapters import start_adapters, watch_adapter_dir
from server.serving.intake import RequestScopes
from server.serving.prepare import EngineClient
from server.settings import ServerSettings

logger = logging.getLogger(__name__)

# Default bound on a prompt's characters: far more than any tokenizer packs into one token on average.
PROMPT_CHARS_PER_TOKEN = 32
# Shutdown steps that wait on others (engine aborts, adapter retirements) give up after this long.
SHUTDOWN_STEP_TIMEOUT_S = 10.0


def make_lifespan(
    state: AppState,
    settings: ServerSettings,
    start_engine: Callable[[], EngineClient],
    stop_engine: Callable[[EngineClient], None],
    meter: EnergyMeter,
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan that starts the engine, its adapters and the serving policy, and stops them."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.wattserve = state
        # Blocking on purpose: nothing can be served until the model is loaded, and uvicorn only
        # starts listening once this returns, so clients never see a half-started server.
        engine = start_engine()
        state.engine = engine
        logger.info("serving %s (max_model_len=%d)", engine.served_model_name, engine.max_model_len)
        sampler = None
        if state.books.metering:
            sampler = EnergySampler(
                meter, state.books.on_reading, asyncio.get_running_loop(), settings.energy_sample_period_s
            )
            state.books.sampler = sampler
            sampler.start()
            logger.info("energy meter: %s (%s)", meter.source, ", ".join(meter.devices))
        watcher = None
        if getattr(engine, "lora_enabled", False):
            state.adapters = await start_adapters(
                settings, engine, engine.served_model_name, engine.model_path, engine.max_lora_rank
            )
            for name in state.adapters.registry.names():
                state.metrics.adapter_added(name)
            if settings.watch_adapters and settings.adapter_dir is not None:
                watcher = asyncio.create_task(watch_adapter_dir(state.adapters, settings.adapter_dir))
        summary = state.energy_summary
        policy = start_policy(
            settings,
            engine.max_num_seqs,
            state.metrics,
            state.carbon,
            lambda: summary.summary().joules_per_output_token_last_minute,
        )
        if hasattr(engine, "observe_steps"):

            def on_step(produced_output: bool, running: int, waiting: int) -> None:
                state.books.engine_step(produced_output, running, waiting)
                policy.on_step(produced_output, running, waiting)

            engine.observe_steps(on_step)
        state.scopes = RequestScopes(
            engine,
            engine.served_model_name,
            state.adapters.registry if state.adapters is not None else None,
            policy.admission,
            state.books,
            state.metrics,
            settings.max_prompt_chars or PROMPT_CHARS_PER_TOKEN * engine.max_model_len,
            flex=policy.flex,
            prompt_tokens_details=settings.enable_prompt_tokens_details,
        )
        lifecycle = state.lifecycle
        lifecycle.attach(asyncio.get_running_loop(), state.scopes)
        if hasattr(engine, "is_dead"):
            lifecycle.watch_engine(lambda: engine.is_dead, state.scopes, settings.keep_alive_on_engine_death)
        try:
            yield
        finally:
            lifecycle.begin_drain()
            scopes, state.scopes = state.scopes, None
            if watcher is not None:
                watcher.cancel()
            for scope in scopes.open_scopes():
                scope.close(Status.ABORTED)
            await _bounded(scopes.wait_for_aborts(), "engine aborts")
            if state.adapters is not None:
                await _bounded(state.adapters.drain(), "adapter retirements")
            state.engine = None
            if sampler is not None:
                sampler.stop()
            policy.stop()
            lifecycle.stop()
            lifecycle.attach(asyncio.get_running_loop(), None)
            stop_engine(engine)

    return lifespan


async def _bounded(work: Awaitable[None], what: str) -> None:
    try:
        await asyncio.wait_for(work, SHUTDOWN_STEP_TIMEOUT_S)
    except TimeoutError:
        logger.warning("shutdown: gave up waiting for %s after %.0f s", what, SHUTDOWN_STEP_TIMEOUT_S)
