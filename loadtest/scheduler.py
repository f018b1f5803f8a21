"""Drive one load point: open-loop sends on a fixed schedule, or a closed loop of fixed concurrency.

Knows no HTTP: it calls `send(index)` and stamps when each request was scheduled, dispatched (the
scheduler got to it) and sent (a concurrency slot was free). Sleeps target absolute deadlines, so lateness
never accumulates. Requests scheduled in the warm-up or cool-down are run like the others and marked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from loadtest.client import Outcome
from loadtest.results import Phase

Send = Callable[[int], Awaitable[Outcome]]


@dataclass(frozen=True)
class Window:
    """The measured part of a point, in seconds from its start."""

    start_s: float
    end_s: float

    def phase(self, at_s: float) -> Phase:
        """Which part of the point a request scheduled at `at_s` belongs to."""
        if at_s < self.start_s:
            return "warmup"
        return "measure" if at_s < self.end_s else "cooldown"


@dataclass
class Sent:
    """One request's schedule stamps (seconds from the point's start) and its outcome."""

    index: int
    scheduled_at_s: float
    dispatched_at_s: float
    outcome: Outcome


async def run_open_loop(
    offsets: np.ndarray,
    send: Send,
    started_at: float,
    concurrency_cap: int | None = None,
    on_done: Callable[[Sent], None] | None = None,
) -> list[Sent]:
    """Send request i at `started_at + offsets[i]` (perf_counter s), at most `concurrency_cap` at once."""
    slots = asyncio.Semaphore(concurrency_cap) if concurrency_cap else None

    async def one(index: int, scheduled_at_s: float, dispatched_at_s: float) -> Sent:
        if slots is None:
            outcome = await send(index)
        else:
            async with slots:
                outcome = await send(index)
        done = Sent(index, scheduled_at_s, dispatched_at_s, outcome)
        if on_done is not None:
            on_done(done)
        return done

    tasks = []
    for index, offset in enumerate(offsets.tolist()):
        # uvloop's timers have millisecond resolution and may wake a little early: sleep again until due.
        while (delay := started_at + offset - time.perf_counter()) > 0:  # noqa: ASYNC110 - a deadline, not an event
            await asyncio.sleep(delay)
        dispatched = time.perf_counter() - started_at
        tasks.append(asyncio.create_task(one(index, offset, dispatched)))
    return list(await asyncio.gather(*tasks))


async def run_closed_loop(
    concurrency: int,
    duration_s: float,
    send: Send,
    started_at: float,
    on_done: Callable[[Sent], None] | None = None,
) -> list[Sent]:
    """`concurrency` workers, each sending its next request as soon as the last one ends, for `duration_s`.

    A closed loop has no schedule: a request counts as scheduled when its worker is free to send it.
    """
    next_index = 0
    results: list[Sent] = []

    async def worker() -> None:
        nonlocal next_index
        while (at_s := time.perf_counter() - started_at) < duration_s:
            index, next_index = next_index, next_index + 1
            done = Sent(index, at_s, at_s, await send(index))
            results.append(done)
            if on_done is not None:
                on_done(done)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sorted(results, key=lambda sent: sent.index)
