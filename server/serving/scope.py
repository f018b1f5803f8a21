"""One generation request's whole life in one place: model lease, admission, energy, engine abort, metrics.

`RequestIntake.open` opens a scope (404 for an unknown model, 429 when full); `RequestScope.close` closes
it, exactly once, on every path: answered, streamed to the end, refused, errored, abandoned by the client
at any moment, or cut at shutdown. `close` never awaits: a client disconnect cancels the request's task,
and in a cancelled task every await is cancelled again, so cleanup that awaited would never finish (that
is how requests used to leak). The one asynchronous cleanup, aborting engine requests that did not
finish, runs as a task of its own (`EngineAborts`) that shutdown waits for.

The admission slot is for engine work: it is given back as soon as every engine request of the scope has
finished, not when the client has read the answer, so a client that reads slowly or not at all holds
no slot another request could use (`close` still gives it back if that never happened). From then
until the response is delivered (`delivered`) the request counts as awaiting its client.

A scope is handed what it uses as one `ScopeServices` record, built once by the composition root; it
holds no reference back to the intake that opened it, only the callback that says it closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from adapters.registry import AdapterRegistry
from adapters.types import AdapterRef
from server.energy.books import EnergyBooks
from server.energy.ledger import EnergyAccount
from server.engine.protocol import Generator
from server.engine.types import GenerationStep, PreparedPrompt, SamplingSpec
from server.errors import ClientDisconnectedError
from server.observability.metrics import BASE_LABEL, ServerMetrics
from server.outcome import BucketCounts, RequestRecord, Status
from server.policy.admission import Ticket
from server.policy.latency import LatencyTracker
from server.serving.aborts import EngineAborts
from server.tiers import Tier

logger = logging.getLogger(__name__)

ADAPTER_VERSION_HEADER = "x-adapter-version"


@dataclass(frozen=True)
class ScopeServices:
    """What every request scope uses, built once by the composition root."""

    engine: Generator
    books: EnergyBooks
    metrics: ServerMetrics
    latency: LatencyTracker
    adapters: AdapterRegistry | None
    aborts: EngineAborts
    prompt_tokens_details: bool


@dataclass(frozen=True)
class EnergyFigures:
    """A request's energy, as `usage.energy` reports it."""

    joules: float
    dynamic_joules: float
    joules_per_output_token: float | None
    co2e_grams: float
    source: str
    # Grams the carbon gate's hold avoided (None unless it held the request for a cleaner grid).
    co2e_avoided_grams: float | None = None


@dataclass(slots=True, eq=False)
class EngineRequest:
    """One request in the engine (a completion with several prompts makes several)."""

    request_id: str
    account: EnergyAccount
    arrival_s: float
    itl: BucketCounts
    first_token_s: float | None = None
    last_token_s: float | None = None
    queue_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    finished: bool = False


class RequestScope:
    """A request's hold on its model version, its admission slot, its energy accounts and its metrics."""

    def __init__(  # noqa: PLR0917 - everything `RequestIntake.open` established, handed over once
        self,
        services: ScopeServices,
        on_closed: Callable[[RequestScope], None],
        adapter: AdapterRef | None,
        ticket: Ticket,
        tier: Tier,
        arrival_s: float,
        flex_lane: tuple[float, float | None] = (0.0, None),
    ) -> None:
        self.request_id = ""
        self.adapter = adapter
        self.tier = tier
        self.label = adapter.name if adapter is not None else BASE_LABEL
        self.engine_requests: list[EngineRequest] = []
        self.status: Status | None = None  # set once, by `close`
        self._services = services
        self._on_closed = on_closed
        self._ticket = ticket
        self._arrival_s = arrival_s
        self._handed_off = False
        self._unfinished = 0  # engine requests started and not finished
        self._awaiting_client = False  # done in the engine, the response not delivered yet
        # The request is the server's from admission on: rendering and tokenizing it is its work too, so
        # its first energy account opens now (the first engine request takes it over).
        self._flex_lane = flex_lane  # seconds waited in the flex lane, grams per joule at arrival if held
        self._admitted_account: EnergyAccount | None = self._open_account(0)

    @property
    def prompt_tokens_details(self) -> bool:
        """Whether usage reports the prompt tokens served from the prefix cache."""
        return self._services.prompt_tokens_details

    @property
    def headers(self) -> dict[str, str]:
        """Response headers naming the adapter version that serves the request."""
        if self.adapter is None:
            return {}
        return {ADAPTER_VERSION_HEADER: f"{self.adapter.name}@{self.adapter.version}"}

    @property
    def closed(self) -> bool:
        """Whether the scope has been closed."""
        return self.status is not None

    def new_request_id(self, prefix: str) -> str:
        """Name the request (`chatcmpl-...`, `cmpl-...`); engine requests take this id or `id-N`."""
        self.request_id = f"{prefix}-{uuid.uuid4().hex}"
        return self.request_id

    async def generate(
        self, prompts: Sequence[PreparedPrompt], spec: SamplingSpec
    ) -> AsyncIterator[tuple[int, GenerationStep]]:
        """Generate for every prompt at once, yielding `(prompt index, step)` with the books kept."""
        engine, priority = self._services.engine, self.tier.engine_priority
        self._unfinished = len(prompts)
        if len(prompts) == 1:
            sub = self._begin(self.request_id, prompts[0])
            async for step in engine.generate(
                prompts[0], spec, sub.request_id, adapter=self.adapter, priority=priority
            ):
                self._on_step(sub, step)
                yield 0, step
            return
        queue: asyncio.Queue[tuple[int, GenerationStep | None, BaseException | None]] = asyncio.Queue()

        async def pump(index: int, prompt: PreparedPrompt) -> None:
            sub = self._begin(f"{self.request_id}-{index}", prompt)
            try:
                async for step in engine.generate(
                    prompt, spec, sub.request_id, adapter=self.adapter, priority=priority
                ):
                    self._on_step(sub, step)
                    queue.put_nowait((index, step, None))
            except Exception as err:  # noqa: BLE001 - handed to the consumer, which re-raises it
                queue.put_nowait((index, None, err))
                return
            queue.put_nowait((index, None, None))

        tasks = [asyncio.create_task(pump(index, prompt)) for index, prompt in enumerate(prompts)]
        try:
            running = len(tasks)
            while running:
                index, step, error = await queue.get()
                if error is not None:
                    raise error
                if step is None:
                    running -= 1
                else:
                    yield index, step
        finally:
            for task in tasks:
                task.cancel()

    def _open_account(self, prompt_tokens: int) -> EnergyAccount:
        account = self._services.books.open(self.label, self.tier.name, prompt_tokens)
        account.lane_wait_s, account.baseline_g_per_j = self._flex_lane
        return account

    def _begin(self, request_id: str, prompt: PreparedPrompt) -> EngineRequest:
        account, self._admitted_account = self._admitted_account, None
        if account is None:
            account = self._open_account(len(prompt.token_ids))
        account.prompt_tokens = len(prompt.token_ids)
        sub = EngineRequest(
            request_id,
            account,
            self._arrival_s,
            self._services.metrics.itl.new_counts(),
            prompt_tokens=len(prompt.token_ids),
        )
        self.engine_requests.append(sub)
        self._services.metrics.waiting.inc()
        return sub

    def _on_step(self, sub: EngineRequest, step: GenerationStep) -> None:
        # Runs once per engine step of every request: keep it to a few attribute updates.
        tokens = step.token_count
        if tokens:
            now = time.monotonic()
            if sub.first_token_s is None:
                sub.first_token_s = now
                self._services.books.ledger.first_token(sub.account)
                metrics = self._services.metrics
                metrics.waiting.dec()
                metrics.running.inc()
            else:
                sub.itl.observe(now - sub.last_token_s)
            sub.last_token_s = now
            sub.completion_tokens += tokens
            sub.account.decode_tokens += tokens
        if step.queue_s is not None:
            sub.queue_s = self._ticket.waited_s + step.queue_s
        if step.cached_tokens is not None:
            sub.cached_tokens = step.cached_tokens
        if step.finished and not sub.finished:
            sub.finished = True
            self._unfinished -= 1
            if not self._unfinished:
                self._engine_done()

    def _engine_done(self) -> None:
        self._ticket.release()
        self._awaiting_client = True
        self._services.metrics.awaiting_client.inc()

    def delivered(self) -> None:
        """The response has been handed to the connection, or never will be; only the first call counts."""
        if self._awaiting_client:
            self._awaiting_client = False
            self._services.metrics.awaiting_client.dec()

    async def finish(self) -> EnergyFigures | None:
        """Close the scope as answered; with a meter, read it first so the energy is final.

        Returns:
            The request's energy, or None when the server does not meter energy.
        """
        books = self._services.books
        await books.settle([sub.account for sub in self.engine_requests])
        self.close(Status.OK)
        if not books.metering:
            return None
        accounts = [sub.account for sub in self.engine_requests]
        joules = sum(a.joules for a in accounts)
        tokens = sum(sub.completion_tokens for sub in self.engine_requests)
        return EnergyFigures(
            joules=joules,
            dynamic_joules=sum(a.dynamic_j for a in accounts),
            joules_per_output_token=joules / tokens if tokens else None,
            co2e_grams=sum(a.grams for a in accounts),
            source=books.source,
            co2e_avoided_grams=(
                sum(a.avoided_grams for a in accounts)
                if any(a.baseline_g_per_j is not None for a in accounts)
                else None
            ),
        )

    def close(self, status: Status) -> None:
        """Release everything the request holds; only the first call does anything. Never awaits."""
        if self.status is not None:
            return
        self.status = status
        services = self._services
        now = time.monotonic()
        unfinished = []
        records = []
        for sub in self.engine_requests:
            if sub.first_token_s is None:
                services.metrics.waiting.dec()
            else:
                services.metrics.running.dec()
            services.books.close(sub.account)
            if not sub.finished:
                unfinished.append(sub.request_id)
            records.append(
                RequestRecord(
                    adapter=self.label,
                    tier=self.tier.name,
                    status=status,
                    prompt_tokens=sub.prompt_tokens if sub.first_token_s is not None else 0,
                    completion_tokens=sub.completion_tokens,
                    ttft_s=None if sub.first_token_s is None else sub.first_token_s - sub.arrival_s,
                    e2e_s=(sub.last_token_s or now) - sub.arrival_s,
                    queue_s=sub.queue_s,
                    itl=sub.itl,
                )
            )
        if self._admitted_account is not None:  # refused before the engine saw it (a 400, a disconnect)
            services.books.close(self._admitted_account)
            records.append(RequestRecord(self.label, self.tier.name, status, reached_engine=False))
        for record in records:
            services.metrics.record(record)
            services.latency.record(record)
        if unfinished:
            services.aborts.abort_in_background(unfinished)
        self._ticket.release()
        if self.adapter is not None and services.adapters is not None:
            services.adapters.release(self.adapter)
        self._on_closed(self)

    def hand_off(self) -> None:
        """The response stream owns the scope from now on and closes it when it ends."""
        self._handed_off = True

    async def __aenter__(self) -> RequestScope:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            gone = issubclass(exc_type, (asyncio.CancelledError, ClientDisconnectedError))
            self.close(Status.ABORTED if gone else Status.ERROR)
            self.delivered()  # what goes out now is an error, not the answer the engine made
        elif not self._handed_off:
            self.close(Status.OK)
