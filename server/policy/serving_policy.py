"""The serving policy for one engine: admission, the flex lane, the SLO governor and their loops.

The composition root builds its parts from the settings once the engine is up (its batch size sets
the defaults); its background tasks (the governor, the grid-intensity refresh) stop with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from server.energy.carbon import CarbonModel
from server.policy.admission import AdmissionController, EngineLoad
from server.policy.flex_lane import FlexLane
from server.policy.governor import Governor

logger = logging.getLogger(__name__)


@dataclass
class ServingPolicy:
    """What decides when a request runs; `stop` ends its background tasks."""

    load: EngineLoad
    admission: AdmissionController
    flex: FlexLane
    governor: Governor | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def waiting(self) -> int:
        """Requests waiting anywhere: admission queue, flex lane, and the engine's queue as of its last step.

        A request is in at most one of them: it leaves the lane before it queues for admission, and is
        in the engine only once admitted.
        """
        return self.admission.queued + self.flex.waiting + self.load.waiting

    def on_step(self, produced_output: bool, running: int, waiting: int) -> None:
        """One engine step (from the engine's stat logger, on the event loop)."""
        self.load.observe(running, waiting)
        self.flex.on_step()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run one of the policy's loops until `stop`; a crash is logged."""
        task = asyncio.get_running_loop().create_task(work)
        task.add_done_callback(log_crash)
        self.tasks.append(task)

    def stop(self) -> None:
        """Cancel the background tasks."""
        for task in self.tasks:
            task.cancel()


def log_crash(task: asyncio.Task[None]) -> None:
    """Log a policy loop that ended other than by cancellation: these run for the server's life."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("serving-policy task %s stopped", task.get_coro(), exc_info=task.exception())


async def refresh_intensity(carbon: CarbonModel, period_s: float) -> None:
    """Refresh the grid intensity every period, off the event loop (a failed refresh logs, keeps the last)."""
    while True:
        await asyncio.to_thread(carbon.source.refresh)
        await asyncio.sleep(period_s)
