"""The composition root: every collaborator built once from the settings, in the order they depend on.

Two phases, because the engine's size sets the serving policy's defaults and the engine starts only in
the app's lifespan (uvicorn listens once it has):
- with the app (`compose`): meter, carbon model, metrics, energy summary, process lifecycle;
- once the engine runs (`start`): the engine's workers as the meter where they can be (`compose_energy`),
  energy books and sampler, adapters, latency tracker, serving
  policy, request intake; `stop` tears them down in the reverse order.
Nothing is filled in later: each object gets its collaborators in its constructor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from adapters.loader import AdapterManager
from adapters.resolver import resolver_for
from server.api.app import build_http_app
from server.api.batch_runner import BatchRunner
from server.api.batch_service import BatchApi
from server.api.lifespan import make_lifespan
from server.api.responses_service import ResponsesService
from server.api.scrape import server_snapshots
from server.api.state import AnswerOptions, AppState, Serving
from server.compose_energy import OpenedMeter, engine_meter, open_server_meter, start_books
from server.energy.carbon import CarbonModel
from server.energy.intensity import IntensitySource
from server.energy.meters.base import EnergyMeter, EnergyMeterError
from server.energy.sampler import EnergySampler, NullSampler
from server.energy.summary import EnergySummaryExporter
from server.engine.protocol import EngineClient
from server.observability.batch_metrics import BatchMetrics
from server.observability.metrics import BASE_LABEL, ServerMetrics
from server.outcome import Status
from server.policy.admission import AdmissionController, EngineLoad
from server.policy.flex_lane import FlexLane
from server.policy.governor import Governor
from server.policy.latency import LatencyTracker
from server.policy.serving_policy import ServingPolicy, refresh_intensity
from server.runtime.lifecycle import EXIT_STARTUP_FAILED, Lifecycle
from server.runtime.startup_adapters import StartupAdaptersError, start_adapters, watch_adapter_dir
from server.serving.aborts import EngineAborts
from server.serving.intake import RequestIntake
from server.serving.prepare import InputLimits
from server.serving.schema_limits import SchemaLimits
from server.serving.scope import ScopeServices
from server.settings import DEFAULT_MAX_RESPONSE_TOKENS, ServerSettings
from server.storage.batches import BatchLimits, open_batch_store
from server.storage.response_store import ResponseStore, StoreLimits

logger = logging.getLogger(__name__)

# Default bound on a prompt's characters: far more than any tokenizer packs into one token on average.
PROMPT_CHARS_PER_TOKEN = 32
# Shutdown steps that wait on others (engine aborts, adapter retirements) give up after this long.
SHUTDOWN_STEP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Composed:
    """The application and the process lifecycle the command line binds to uvicorn's signals."""

    app: FastAPI
    lifecycle: Lifecycle


@dataclass(frozen=True)
class Running:
    """What `start` built and `stop` tears down."""

    engine: EngineClient
    sampler: EnergySampler | NullSampler
    adapters: AdapterManager | None
    watcher: asyncio.Task[None] | None
    policy: ServingPolicy
    aborts: EngineAborts
    intake: RequestIntake
    responses: ResponsesService
    batches: BatchApi


def create_app(
    settings: ServerSettings,
    start_engine: Callable[[], EngineClient],
    stop_engine: Callable[[EngineClient], None] = lambda _: None,
    meter: EnergyMeter | None = None,
) -> FastAPI:
    """The application (see `compose`), for uvicorn or an ASGI test transport."""
    return compose(settings, start_engine, stop_engine, meter).app


def compose(
    settings: ServerSettings,
    start_engine: Callable[[], EngineClient],
    stop_engine: Callable[[EngineClient], None] = lambda _: None,
    meter: EnergyMeter | None = None,
) -> Composed:
    """Build the server.

    Args:
        settings: The server's own settings.
        start_engine: Called once at startup (blocking: nothing can be served before the model is
            loaded); returns the engine to serve with.
        stop_engine: Called once at shutdown with that engine.
        meter: The energy meter; by default the one `settings.energy_meter` names.
    """
    opened = open_server_meter(settings) if meter is None else OpenedMeter(meter, try_workers=False)
    carbon = _carbon_model(settings)
    registry = CollectorRegistry()
    metrics = ServerMetrics(registry, opened.meter.source, list(opened.meter.devices))
    metrics.adapter_added(BASE_LABEL)
    metrics.grid_intensity.set_function(lambda: carbon.grid_g_per_kwh)
    summary = EnergySummaryExporter(opened.meter.source, list(opened.meter.devices), carbon)
    lifecycle = Lifecycle(settings.shutdown_grace_seconds)
    state = AppState(
        scrapes=server_snapshots(registry, summary, settings.scrape_min_interval_ms / 1000),
        answers=AnswerOptions(settings.response_role, settings.force_include_usage),
    )
    metrics.engine_healthy.set_function(lambda: 1.0 if state.engine_healthy else 0.0)

    async def start() -> tuple[Serving, Running]:
        engine = start_engine()
        logger.info("serving %s (max_model_len=%d)", engine.served_model_name, engine.max_model_len)
        sampler: EnergySampler | NullSampler = NullSampler()  # until the meter is known
        try:
            meter = await engine_meter(settings, engine, opened, (metrics, summary), registry)
            sampler, books = start_books(settings, meter, carbon, [metrics, summary])
            adapters, watcher = await _start_adapters(settings, engine, metrics)
        except (EnergyMeterError, StartupAdaptersError):
            lifecycle.exit_code = EXIT_STARTUP_FAILED
            sampler.stop()
            stop_engine(engine)
            raise
        latency = LatencyTracker(metrics.itl.bounds)
        policy = _start_policy(
            settings,
            engine.max_num_seqs,
            metrics,
            carbon,
            latency,
            lambda: summary.summary().joules_per_output_token_last_minute,
        )

        def on_step(produced_output: bool, running: int, waiting: int) -> None:
            books.engine_step(produced_output, waiting)
            policy.on_step(produced_output, running, waiting)

        engine.observe_steps(on_step)
        aborts = EngineAborts(engine)
        services = ScopeServices(
            engine=engine,
            books=books,
            metrics=metrics,
            latency=latency,
            adapters=adapters.registry if adapters is not None else None,
            aborts=aborts,
            prompt_tokens_details=settings.enable_prompt_tokens_details,
        )
        intake = RequestIntake(
            services,
            engine.served_model_names,
            policy.admission,
            policy.flex,
            InputLimits(
                prompt_chars=settings.max_prompt_chars or PROMPT_CHARS_PER_TOKEN * engine.max_model_len,
                chat_messages=settings.max_chat_messages,
                response_tokens=settings.max_response_tokens
                or max(DEFAULT_MAX_RESPONSE_TOKENS, engine.max_model_len),
                schema=SchemaLimits(
                    settings.max_schema_bytes, settings.max_schema_enum_values, settings.max_schema_properties
                ),
                tools=settings.max_tools,
            ),
            resolver=resolver_for(adapters, settings.adapter_dir, settings.load_adapters_on_request),
        )
        lifecycle.attach(asyncio.get_running_loop(), intake)
        lifecycle.watch_engine(lambda: engine.is_dead, intake, settings.keep_alive_on_engine_death)
        responses = await ResponsesService.open(await _open_response_store(settings))
        batches = await _start_batches(
            settings,
            BatchMetrics(registry),
            Serving(engine, adapters, intake, responses),
            state.answers,
            books.source if books.metering else None,
        )
        running = Running(engine, sampler, adapters, watcher, policy, aborts, intake, responses, batches)
        return Serving(engine, adapters, intake, responses, batches), running

    async def stop(running: Running) -> None:
        lifecycle.begin_drain()
        if running.watcher is not None:
            running.watcher.cancel()
        for scope in running.intake.open_scopes():
            scope.close(Status.ABORTED)
        await _finish_requests_work(running)
        # Off the loop: the workers' meter waits on this loop for its RPC while the sampler is joined.
        await asyncio.to_thread(running.sampler.stop)
        running.policy.stop()
        lifecycle.stop()
        lifecycle.attach(asyncio.get_running_loop(), None)
        stop_engine(running.engine)

    app = build_http_app(settings, state, make_lifespan(state, start, stop))
    return Composed(app, lifecycle)


async def _finish_requests_work(running: Running) -> None:
    """Wait, each step bounded, for what requests left running: batch lines, responses, aborts, adapters."""
    await _bounded(running.batches.runner.stop(SHUTDOWN_STEP_TIMEOUT_S / 2), "batch lines")
    await _bounded(running.batches.store.close(), "the batch store")
    await _bounded(running.responses.close(), "background responses and stored-response writes")
    await _bounded(running.aborts.wait(), "engine aborts")
    if running.adapters is not None:
        await _bounded(running.adapters.drain(), "adapter retirements")


async def _start_batches(
    settings: ServerSettings,
    metrics: BatchMetrics,
    serving: Serving,
    answers: AnswerOptions,
    energy_source: str | None,
) -> BatchApi:
    """Open the batch store and start this replica's runner on it."""
    limits = BatchLimits(
        max_file_bytes=settings.max_batch_file_bytes,
        max_total_bytes=settings.max_batch_storage_bytes,
        file_ttl_s=settings.batch_file_ttl_seconds,
        lease_s=settings.batch_lease_seconds,
    )
    url = settings.batch_store or f"sqlite:///{settings.cache_dir / 'batches.sqlite3'}"
    store = await open_batch_store(url, settings.cache_dir / "batch-files", limits)
    runner = BatchRunner(
        store,
        serving,
        answers,
        max_in_flight=settings.batch_max_in_flight or max(1, serving.engine.max_num_seqs // 2),
        max_beside_live=settings.batch_max_in_flight_beside_live,
        lease_s=settings.batch_lease_seconds,
        file_ttl_s=settings.batch_file_ttl_seconds,
        metrics=metrics,
    )
    runner.start()
    return BatchApi(store, limits, settings.max_batch_lines, runner, energy_source)


async def _open_response_store(settings: ServerSettings) -> ResponseStore:
    path = settings.responses_store or settings.cache_dir / "responses.sqlite3"
    limits = StoreLimits(
        settings.responses_store_max_count,
        settings.responses_store_max_bytes,
        settings.responses_store_ttl_seconds,
    )
    return await ResponseStore.open(path, limits)


def _carbon_model(settings: ServerSettings) -> CarbonModel:
    headers = dict(header.split(":", 1) for header in settings.grid_intensity_headers if ":" in header)
    intensity = IntensitySource(
        settings.grid_intensity_source,
        settings.grid_intensity_g_per_kwh,
        {name.strip(): value.strip() for name, value in headers.items()},
    )
    return CarbonModel(intensity, settings.pue)


async def _start_adapters(
    settings: ServerSettings, engine: EngineClient, metrics: ServerMetrics
) -> tuple[AdapterManager | None, asyncio.Task[None] | None]:
    if not engine.lora_enabled:
        return None, None
    adapters = await start_adapters(
        engine,
        settings.lora_modules,
        settings.adapter_dir,
        settings.adapter_roots,
        allow_missing=settings.allow_missing_adapters,
        on_change=metrics.router.adapters_changed,
    )
    for name in adapters.registry.names():
        metrics.adapter_added(name)
    watcher = None
    if settings.watch_adapters and settings.adapter_dir is not None:
        watcher = asyncio.create_task(watch_adapter_dir(adapters, settings.adapter_dir))
    return adapters, watcher


def _start_policy(  # noqa: PLR0917 - the policy's inputs, each built above
    settings: ServerSettings,
    max_num_seqs: int,
    metrics: ServerMetrics,
    carbon: CarbonModel,
    latency: LatencyTracker,
    joules_per_token: Callable[[], float | None],
) -> ServingPolicy:
    """Build the policy for an engine running `max_num_seqs` at once, and start its loops.

    Defaults: twice the batch may be in the engine at once (its own queue keeps the next batch ready),
    as many again wait for a slot, then 429; the flex lane holds four batches, starts a batch of its
    own on an idle engine at half of one, and lets one rider per 32 places of the batch join a running
    batch per step.
    """
    load = EngineLoad(max_num_seqs)
    admission = AdmissionController(
        settings.max_concurrent_requests or 2 * max_num_seqs,
        settings.max_queued_requests if settings.max_queued_requests is not None else 2 * max_num_seqs,
        load,
    )
    source = carbon.source
    limit = settings.flex_max_intensity
    carbon_hold = (
        (lambda: carbon.grid_g_per_kwh > limit) if source.live and limit is not None else (lambda: False)
    )
    flex = FlexLane(
        load,
        max_queued=settings.flex_max_queued if settings.flex_max_queued is not None else 4 * max_num_seqs,
        max_wait_s=settings.flex_max_wait_seconds,
        batch_size=settings.flex_batch_size or max(1, max_num_seqs // 2),
        riders_per_step=settings.flex_riders_per_step or max(1, max_num_seqs // 32),
        carbon_hold=carbon_hold,
    )
    governor = None
    if settings.energy_policy == "slo":
        governor = Governor(
            admission,
            latency,
            metrics,
            joules_per_token,
            slo_ttft_s=settings.slo_ttft_p90,
            slo_itl_s=settings.slo_itl_p90,
        )
    policy = ServingPolicy(load, admission, flex, governor)
    metrics.queued.set_function(lambda: admission.queued)
    metrics.admitted.set_function(lambda: admission.running)
    metrics.in_flex_lane.set_function(lambda: flex.waiting)
    metrics.router.count_waiting(policy.waiting)
    if governor is not None:
        policy.spawn(governor.run())
    if source.live:
        policy.spawn(refresh_intensity(carbon, settings.grid_intensity_refresh_seconds))
    logger.info(
        "admission: %d at once, %d queued; flex lane: %d, wait at most %g s, batches of %d, "
        "%d riders per step; governor: %s%s",
        admission.max_running,
        admission.max_queued,
        flex.max_queued,
        flex.max_wait_s,
        flex.batch_size,
        flex.riders_per_step,
        settings.energy_policy,
        f"; flex held above {limit} gCO2e/kWh from {source.location}"
        if source.live and limit is not None
        else "",
    )
    return policy


async def _bounded(work: Awaitable[None], what: str) -> None:
    try:
        await asyncio.wait_for(work, SHUTDOWN_STEP_TIMEOUT_S)
    except TimeoutError:
        logger.warning("shutdown: gave up waiting for %s after %.0f s", what, SHUTDOWN_STEP_TIMEOUT_S)
