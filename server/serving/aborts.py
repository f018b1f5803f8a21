"""Engine aborts sent from tasks of their own: they outlive the cancelled request task that asked for them."""

from __future__ import annotations

import asyncio
import logging

from server.engine.protocol import Generator

logger = logging.getLogger(__name__)


class EngineAborts:
    """Sends engine aborts in the background; shutdown waits for them."""

    def __init__(self, engine: Generator) -> None:
        self._engine = engine
        self._tasks: set[asyncio.Task[None]] = set()

    def abort_in_background(self, request_ids: list[str]) -> None:
        """Abort these engine requests from a task of its own."""
        task = asyncio.get_running_loop().create_task(self._abort(request_ids))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _abort(self, request_ids: list[str]) -> None:
        for request_id in request_ids:
            try:
                await self._engine.abort(request_id)
            except Exception:
                logger.exception("aborting %s in the engine failed", request_id)

    async def wait(self) -> None:
        """Wait until every background abort has been sent (at shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
