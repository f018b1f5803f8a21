"""Admission control: a bounded number of requests in the engine, one queue ordered by tier, 429 beyond.

Invariants:
- `running` counts tickets handed out and not yet released; it never exceeds `max_running`.
- A queued request is woken only with a ticket already counted for it, so a slot is never lost between
  the release that frees it and the waiter that takes it; a waiter that went away hands its ticket on.
- `queued` counts the waiters in the queue: each is counted out exactly once, by whichever comes first of
  the release that pops it and its own departure (a waiter can be popped after its task was cancelled
  and before that task runs again). One counted twice or never would leave a phantom in the queue, and
  every later request would queue behind it with nothing running to let it out.
- The queue never holds more than `max_queued` requests; one more is refused at once, never parked.
- Order: by the tier's admission rank (`server.tiers`), then by arrival. A flex request released from its
  lane keeps its arrival time, so it goes ahead of default requests that came after it and is never
  starved.

With a batching window (set by the governor), a request of a tier that waits for companions (default)
that finds the engine nearly idle waits up to the window for them, as Triton's dynamic batcher does, so
they start as one batch.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections import deque
from dataclasses import dataclass, field

from server.errors import EngineUnavailableError, OverloadedError
from server.tiers import Tier

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


@dataclass
class EngineLoad:
    """The engine's batch as its last step left it (updated by every engine step)."""

    max_num_seqs: int
    running: int = 0
    waiting: int = 0
    let_in: int = 0  # requests sent towards the engine since its last step, not in its counts yet

    def observe(self, running: int, waiting: int) -> None:
        """One engine step's counts."""
        self.running, self.waiting, self.let_in = running, waiting, 0

    @property
    def room(self) -> int:
        """Free places in the engine's batch, net of those waiting for one or on their way."""
        return self.max_num_seqs - self.running - self.waiting - self.let_in


@dataclass(order=True)
class _Waiter:
    rank: int
    arrival_s: float
    sequence: int
    future: asyncio.Future[Ticket] = field(compare=False)
    counted: bool = field(default=True, compare=False)  # still in `_waiting`; whoever takes it out clears it


class AdmissionController:
    """At most `max_running` requests admitted at once, at most `max_queued` waiting for a slot."""

    def __init__(self, max_running: int, max_queued: int, load: EngineLoad | None = None) -> None:
        self.max_running = max_running
        self.max_queued = max_queued
        self.load = load or EngineLoad(max_running)
        self.running = 0
        self.closed = False
        # The governor's batching window (0: off) and the batch that closes it early.
        self.batch_window_s = 0.0
        self.batch_target = 1
        self._queue: list[_Waiter] = []
        self._waiting = 0  # live waiters in `_queue` (cancelled ones are dropped lazily)
        self._sequence = itertools.count()
        self._gathering: list[asyncio.Future[None]] = []
        self._gather_timer: asyncio.TimerHandle | None = None
        self._finished_at: deque[float] = deque()

    @property
    def queued(self) -> int:
        """Requests waiting for a slot."""
        return self._waiting

    async def admit(self, tier: Tier, arrival_s: float | None = None) -> Ticket:
        """A slot now, or a place in the queue until one frees.

        Args:
            tier: The request's service tier (its admission rank orders the queue).
            arrival_s: When the request arrived (monotonic); a flex request passes its arrival before
                the lane, not the moment it left the lane.

        Raises:
            OverloadedError: The queue is full (429 with a Retry-After estimate).
            EngineUnavailableError: The server is shutting down or its engine died (503).
        """
        if self.closed:
            raise EngineUnavailableError(CLOSED)
        if tier.waits_for_companions and self.batch_window_s > 0 and self._nearly_idle():
            await self._gather()
        if self.running < self.max_running and not self.queued:
            self.running += 1
            return Ticket(self)
        if self.queued >= self.max_queued:
            raise OverloadedError(
                f"The server is at capacity ({self.running} requests running, {self.queued} queued); "
                "retry later.",
                retry_after_s=self.retry_after_s(),
            )
        now = time.monotonic()
        waiter = _Waiter(tier.admission_rank, arrival_s or now, next(self._sequence), _future())
        heapq.heappush(self._queue, waiter)
        self._waiting += 1
        try:
            return await waiter.future
        except asyncio.CancelledError:
            # Gone while queued (client disconnect): leave the queue, or pass on a slot already given.
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                future.result().release()
            elif waiter.counted:
                # Still queued. (A release may already have popped it, between the cancellation and now:
                # then it was counted out there.)
                waiter.counted = False
                self._waiting -= 1
                self._queue.remove(waiter)
                heapq.heapify(self._queue)
            raise

    def close(self) -> None:
        """Admit nothing more: queued and later requests get 503 (shutdown, engine death)."""
        self.closed = True
        self._release_gathered()
        for waiter in self._queue:
            waiter.counted = False
            if not waiter.future.done():
                waiter.future.set_exception(EngineUnavailableError(CLOSED))
        self._queue.clear()
        self._waiting = 0

    def retry_after_s(self) -> int:
        """Seconds until a queued place is likely to free, from the completions of the last half minute."""
        now = time.monotonic()
        while self._finished_at and self._finished_at[0] < now - RATE_WINDOW_S:
            self._finished_at.popleft()
        rate_per_s = len(self._finished_at) / RATE_WINDOW_S
        if rate_per_s <= 0:
            return MAX_RETRY_AFTER_S
        estimate = math.ceil((self.queued + 1) / rate_per_s)
        return max(MIN_RETRY_AFTER_S, min(MAX_RETRY_AFTER_S, estimate))

    def _nearly_idle(self) -> bool:
        # A request joining a running batch needs no companions: continuous batching takes it at once.
        # Those gathering are not running yet: counting them would make the third of a batch of three
        # skip the window and leave the first two to wait it out.
        return self.running <= 1 and self.load.running <= 1

    async def _gather(self) -> None:
        gathered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._gathering.append(gathered)
        if len(self._gathering) == 1:
            self._gather_timer = asyncio.get_running_loop().call_later(
                self.batch_window_s, self._release_gathered
            )
        if len(self._gathering) >= self.batch_target:
            self._release_gathered()
        try:
            await gathered
        except asyncio.CancelledError:
            if gathered in self._gathering:
                self._gathering.remove(gathered)
            raise

    def _release_gathered(self) -> None:
        if self._gather_timer is not None:
            self._gather_timer.cancel()
            self._gather_timer = None
        gathered, self._gathering = self._gathering, []
        for future in gathered:
            if not future.done():
                future.set_result(None)

    def _release(self) -> None:
        self.running -= 1
        now = time.monotonic()
        self._finished_at.append(now)
        while self._finished_at[0] < now - RATE_WINDOW_S:
            self._finished_at.popleft()
        self._admit_queued()

    def _admit_queued(self) -> None:
        while self._queue and self.running < self.max_running and not self.closed:
            waiter = heapq.heappop(self._queue)
            waiter.counted = False
            self._waiting -= 1
            if waiter.future.done():  # cancelled, its task not told yet: it finds itself counted out
                continue
            self.running += 1
            waiter.future.set_result(Ticket(self, time.monotonic() - waiter.arrival_s))

    def set_max_running(self, max_running: int) -> None:
        """Change how many requests may run at once (the governor); raising it admits queued ones."""
        self.max_running = max_running
        self._admit_queued()


def _future() -> asyncio.Future[Ticket]:
    return asyncio.get_running_loop().create_future()
