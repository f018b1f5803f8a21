"""What `/metrics` and `/v1/energy` answer: snapshots rendered off the event loop, at a bounded rate.

Rendering the Prometheus page costs tens of milliseconds; on the event loop, every scrape delayed every
request, and ten scrapers in a loop made serving slow. Here:

- a snapshot is rendered in a worker thread, with the metrics page and the energy document together;
- one render serves every scrape that arrived before it began, and a render begins at most once per
  `min_interval_s`, so any number of scrapers cost at most one render per interval;
- a scrape is answered by a render that began after it arrived, never an older one, so it reflects
  everything that happened before the scrape (a client that scrapes after its answer sees it counted).

The energy document is taken on the event loop at the moment the render begins (a copy of a few
totals; the ledger that feeds it runs on the loop), and serialised in the thread with the page.
prometheus_client's values are safe to read from another thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from server.energy.summary import EnergySummaryExporter
from server.observability.router_metrics import ServedLoraNames


@dataclass(frozen=True)
class Snapshot:
    """One rendering: the Prometheus page (ours, then vLLM's) and the `/v1/energy` JSON."""

    metrics: bytes
    energy: bytes


class ScrapeSnapshots:
    """Hands each scrape a snapshot begun after it arrived; renders at most once per interval."""

    def __init__(
        self,
        render: Callable[[], Callable[[], Snapshot]],
        min_interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Snapshots from `render`, begun at most once per `min_interval_s`.

        Args:
            render: Called on the event loop when a render begins; returns the part run in a thread.
            min_interval_s: Least time between the beginnings of two renders.
            clock: Monotonic seconds.
            sleep: Waits that many seconds (tests pass their own clock's).
        """
        self._render = render
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._sleep = sleep
        self._last_begun_s = -float("inf")
        self._next: asyncio.Future[Snapshot] | None = None  # the render not begun yet
        self._previous: asyncio.Task[None] | None = None  # the render before it (running or done)

    async def latest(self) -> Snapshot:
        """A snapshot whose render began after this call."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._previous = asyncio.create_task(self._run(self._next, self._previous))
        # Shielded: a scraper that leaves does not cancel the render others wait for.
        return await asyncio.shield(self._next)

    async def _run(self, future: asyncio.Future[Snapshot], previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await previous  # one render at a time
        wait_s = self._last_begun_s + self._min_interval_s - self._clock()
        if wait_s > 0:
            await self._sleep(wait_s)
        self._next = None  # scrapes from now on need the render after this one
        self._last_begun_s = self._clock()
        try:
            snapshot = await asyncio.to_thread(self._render())
        except Exception as err:  # noqa: BLE001 - every waiting scrape gets it
            future.set_exception(err)
            future.exception()  # marked retrieved: no warning when every waiting scrape has left
        else:
            future.set_result(snapshot)


def server_snapshots(
    registry: CollectorRegistry, energy: EnergySummaryExporter, min_interval_s: float
) -> ScrapeSnapshots:
    """Snapshots of wattserve's registry, vLLM's (the process-wide one) and the energy summary.

    vLLM's page names adapters as clients do (`ServedLoraNames`), rewritten here in the render thread.
    """
    vllm_metrics = ServedLoraNames(REGISTRY)

    def render() -> Callable[[], Snapshot]:
        summary = energy.summary()  # on the event loop: the ledger's totals as of this moment
        return lambda: Snapshot(
            generate_latest(registry) + generate_latest(vllm_metrics), summary.model_dump_json().encode()
        )

    return ScrapeSnapshots(render, min_interval_s)
