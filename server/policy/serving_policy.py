"""The serving policy for one engine: admission limits, the flex lane, the SLO governor and the carbon gate.

Built from the settings once the engine is up (its batch size sets the defaults); its background tasks
(the governor, the grid-intensity refresh) stop with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from server.energy.carbon import CarbonModel
from server.observability.metrics import ServerMetrics
from server.policy.admission import AdmissionController, EngineLoad
from server.policy.flex_lane import FlexLane
from server.policy.governor import Governor
from server.settings import ServerSettings

logger = logging.getLogger(__name__)


@dataclass
class ServingPolicy:
    """What decides when a request runs; `stop` ends its background tasks."""

    load: EngineLoad
    admission: AdmissionController
    flex: FlexLane
    governor: Governor | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def on_step(self, produced_output: bool, running: int, waiting: int) -> None:
        """One engine step (from the engine's stat logger, on the event loop)."""
        self.load.observe(produced_output, running, waiting)
        self.flex.on_step()

    def stop(self) -> None:
        """Cancel the background tasks."""
        for task in self.tasks:
            task.cancel()


def start_policy(
    settings: ServerSettings,
    max_num_seqs: int,
    metrics: ServerMetrics,
    carbon: CarbonModel,
    joules_per_token: Callable[[], float | None],
) -> ServingPolicy:
    """Build the policy for an engine running `max_num_seqs` at once, and start its tasks.

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
    policy = ServingPolicy(load, admission, flex)
    metrics.queued.set_function(lambda: admission.queued)
    metrics.admitted.set_function(lambda: admission.running)
    metrics.in_flex_lane.set_function(lambda: flex.waiting)
    if settings.energy_policy == "slo":
        policy.governor = Governor(
            admission,
            metrics,
            joules_per_token,
            slo_ttft_s=settings.slo_ttft_p90,
            slo_itl_s=settings.slo_itl_p90,
        )
        _spawn(policy, policy.governor.run())
    if source.live:
        _spawn(policy, _refresh_intensity(carbon, settings.grid_intensity_refresh_seconds))
    logger.info(
        "admission: %d at once, %d queued; flex lane: %d, wait at most %.0f s, batches of %d, "
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


def _spawn(policy: ServingPolicy, work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(work)
    task.add_done_callback(_log_crash)
    policy.tasks.append(task)


def _log_crash(task: asyncio.Task[None]) -> None:
    # These loops run for the server's life: one that ends other than by cancellation is a bug to see.
    if not task.cancelled() and task.exception() is not None:
        logger.error("serving-policy task %s stopped", task.get_coro(), exc_info=task.exception())


async def _refresh_intensity(carbon: CarbonModel, period_s: float) -> None:
    while True:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(carbon.source.refresh)
        await asyncio.sleep(period_s)
