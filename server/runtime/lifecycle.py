"""The process's end: graceful shutdown on SIGTERM, and exit on engine death so a supervisor restarts it.

On SIGTERM uvicorn stops accepting connections and waits up to the grace period for responses in flight.
Just before that wait runs out, requests still running are aborted in the engine, so a cut stream ends
with an SSE error event and `[DONE]` instead of a dropped connection, and queued requests get 503.

When vLLM's engine dies, every request in flight fails with an error (streams with an error event); once
they have, the process exits non-zero, unless `--keep-alive-on-engine-death` keeps it answering 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from server.serving.intake import RequestIntake

logger = logging.getLogger(__name__)

# Streams still running this long before uvicorn's grace period ends are cut (at half of a short one).
CUT_MARGIN_S = 2.0
ENGINE_WATCH_PERIOD_S = 0.5
# After the engine died, how long in-flight requests get to receive their error before the exit.
DEATH_DRAIN_S = 10.0
EXIT_ENGINE_DEAD = 3
EXIT_STARTUP_FAILED = 1


def cut_after_s(grace_s: float) -> float:
    """When, after SIGTERM, requests still running are cut: just before uvicorn's grace period ends.

    `CUT_MARGIN_S` before its end leaves the cut streams time to send their error event and `[DONE]`;
    a grace period shorter than twice the margin is cut at its half.
    """
    return max(0.0, grace_s - min(CUT_MARGIN_S, grace_s / 2))


class Lifecycle:
    """Knows whether the server is draining and how the process should end."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.draining = False
        self.exit_code = 0
        self._stop_server: Callable[[], None] = lambda: None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._intake: RequestIntake | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def bind_server(self, stop_server: Callable[[], None]) -> None:
        """Tell the lifecycle how to stop the HTTP server (uvicorn's `should_exit`)."""
        self._stop_server = stop_server

    def attach(self, loop: asyncio.AbstractEventLoop, intake: RequestIntake | None) -> None:
        """The running loop and the request intake (set once serving starts; None once it stops)."""
        self._loop, self._intake = loop, intake

    def on_signal(self) -> None:
        """Called from the signal handler: drain, on the event loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.begin_drain)

    def begin_drain(self) -> None:
        """SIGTERM: refuse new work and cut what still runs just before the grace period ends."""
        if self.draining:
            return
        self.draining = True
        cut_s = cut_after_s(self.grace_s)
        logger.info("shutting down: in-flight requests have %.0f s to finish before they are cut", cut_s)
        intake = self._intake
        if intake is None:
            return
        intake.close_intake()
        self._spawn(self._cut_after(intake, cut_s))

    async def _cut_after(self, intake: RequestIntake, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        if intake.open_count:
            logger.warning("shutting down: cutting %d requests still in flight", intake.open_count)
            intake.interrupt_all()

    def watch_engine(self, is_dead: Callable[[], bool], intake: RequestIntake, keep_alive: bool) -> None:
        """Watch the engine; when it dies, let in-flight requests get their error, then exit non-zero."""
        self._spawn(self._watch(is_dead, intake, keep_alive))

    async def _watch(self, is_dead: Callable[[], bool], intake: RequestIntake, keep_alive: bool) -> None:
        # vLLM offers nothing to await for the engine's death: its `errored` flag is polled.
        while not is_dead():  # noqa: ASYNC110
            await asyncio.sleep(ENGINE_WATCH_PERIOD_S)
        if keep_alive:
            logger.error("the engine died; answering 503 until restarted (--keep-alive-on-engine-death)")
            return
        logger.error("the engine died: answering in-flight requests with an error, then exiting")
        self.exit_code = EXIT_ENGINE_DEAD
        intake.close_intake()
        try:
            await asyncio.wait_for(intake.all_closed(), DEATH_DRAIN_S)
        except TimeoutError:
            intake.interrupt_all()
        self._stop_server()

    def stop(self) -> None:
        """Cancel the lifecycle's own tasks (at the end of shutdown)."""
        for task in self._tasks:
            task.cancel()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
