"""Admission control: a bounded number of requests in the engine, a bounded queue, and 429 beyond it.

Invariants:
- `running` counts tickets handed out and not yet released; it never exceeds `max_running`.
- A queued request is woken only with a ticket already counted for it, so a slot is never lost between
  the release that frees it and the waiter that takes it; a waiter that went away hands its ticket on.
- The queue never holds more than `max_queued` requests; one more is refused at once, never parked.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque

from server.errors import EngineUnavailableError, OverloadedError

# Retry-After is an estimate from the recent completion rate, kept within these bounds (seconds).
MIN_RETRY_AFTER_S, MAX_RETRY_AFTER_S = 1, 60
RATE_WINDOW_S = 30.0
CLOSED = "The server is shutting down or its engine has stopped; it takes no new requests."


class Ticket:
    """One admitted request's slot; `release` is idempotent."""

    __slots__ = ("_controller", "waited_s")

    def __init__(self, controller: AdmissionController, waited_s: float = 0.0) -> None:
        self._controller: AdmissionController | None = controller
        self.waited_s = waited_s

    def release(self) -> None:
        """Give the slot back (to the next queued request, if any)."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller._release()


class AdmissionController:
    """At most `max_running` requests admitted at once, at most `max_queued` waiting for a slot."""

    def __init__(self, max_running: int, max_queued: int) -> None:
        self.max_running = max_running
        self.max_queued = max_queued
        self.running = 0
        self.closed = False
        self._queue: deque[tuple[asyncio.Future[Ticket], float]] = deque()
        self._finished_at: deque[float] = deque()

    @property
    def queued(self) -> int:
        """Requests waiting for a slot."""
        return len(self._queue)

    async def admit(self) -> Ticket:
        """A slot now, or a place in the queue until one frees.

        Raises:
            OverloadedError: The queue is full (429 with a Retry-After estimate).
            EngineUnavailableError: The server is shutting down or its engine died (503).
        """
        if self.closed:
            raise EngineUnavailableError(CLOSED)
        if self.running < self.max_running and not self._queue:
            self.running += 1
            return Ticket(self)
        if len(self._queue) >= self.max_queued:
            raise OverloadedError(
                f"The server is at capacity ({self.running} requests running, {len(self._queue)} queued); "
                "retry later.",
                retry_after_s=self.retry_after_s(),
            )
        waiter: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()
        self._queue.append((waiter, time.monotonic()))
        try:
            return await waiter
        except asyncio.CancelledError:
            # Gone while queued (client disconnect): leave the queue, or pass on a slot already given.
            if waiter.done() and not waiter.cancelled():
                waiter.result().release()
            else:
                self._queue = deque(entry for entry in self._queue if entry[0] is not waiter)
            raise

    def close(self) -> None:
        """Admit nothing more: queued and later requests get 503 (shutdown, engine death)."""
        self.closed = True
        while self._queue:
            waiter, _ = self._queue.popleft()
            if not waiter.done():
                waiter.set_exception(EngineUnavailableError(CLOSED))

    def retry_after_s(self) -> int:
        """Seconds until a queued place is likely to free, from the completions of the last half minute."""
        now = time.monotonic()
        while self._finished_at and self._finished_at[0] < now - RATE_WINDOW_S:
            self._finished_at.popleft()
        rate_per_s = len(self._finished_at) / RATE_WINDOW_S
        if rate_per_s <= 0:
            return MAX_RETRY_AFTER_S
        estimate = math.ceil((len(self._queue) + 1) / rate_per_s)
        return max(MIN_RETRY_AFTER_S, min(MAX_RETRY_AFTER_S, estimate))

    def _release(self) -> None:
        self.running -= 1
        now = time.monotonic()
        self._finished_at.append(now)
        while self._finished_at[0] < now - RATE_WINDOW_S:
            self._finished_at.popleft()
        while self._queue and self.running < self.max_running and not self.closed:
            waiter, queued_at = self._queue.popleft()
            if waiter.done():  # cancelled while queued
                continue
            self.running += 1
            waiter.set_result(Ticket(self, time.monotonic() - queued_at))
