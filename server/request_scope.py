"""One generation request's whole life in one place: model lease, admission, energy, engine abort, metrics.

`RequestScopes.open` opens a scope (404 for an unknown model, 429 when full); `RequestScope.close` closes
it, exactly once, on every path: answered, streamed to the end, refused, errored, abandoned by the client
at any moment, or cut at shutdown. `close` never awaits: a client disconnect cancels the request's task,
and in a cancelled task every await is cancelled again, so cleanup that awaited would never finish (that
is how requests used to leak). The one asynchronous cleanup, aborting engine requests that did not
finish, runs as a task of its own that shutdown waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, TypeVar

from fastapi import Request

from adapters.errors import AdapterNotFoundError
from adapters.registry import AdapterRegistry
from adapters.types import AdapterRef
from server.admission import AdmissionController, Ticket
from server.energy.books import EnergyBooks
from server.energy.ledger import EnergyAccount
from server.engine.types import GenerationStep, PreparedPrompt, SamplingSpec
from server.errors import ClientDisconnectedError, ModelNotFoundError
from server.histograms import BucketCounts
from server.metrics import BASE_LABEL, RequestRecord, ServerMetrics, Status

logger = logging.getLogger(__name__)
T = TypeVar("T")

ADAPTER_VERSION_HEADER = "x-adapter-version"


class Generator(Protocol):
    """What a scope needs from the engine."""

    def generate(
        self,
        prompt: PreparedPrompt,
        spec: SamplingSpec,
        request_id: str,
        *,
        adapter: AdapterRef | None = None,
        priority: int = 0,
    ) -> AsyncIterator[GenerationStep]:
        """Stream the steps of one generation."""
        ...

    async def abort(self, request_id: str) -> None:
        """Stop a request and free its KV blocks."""
        ...


@dataclass(frozen=True)
class EnergyFigures:
    """A request's energy, as `usage.energy` reports it."""

    joules: float
    dynamic_joules: float
    joules_per_output_token: float | None
    co2e_grams: float
    source: str


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
    finished: bool = False


class RequestScope:
    """A request's hold on its model version, its admission slot, its energy accounts and its metrics."""

    def __init__(
        self, scopes: RequestScopes, adapter: AdapterRef | None, ticket: Ticket, tier: str, arrival_s: float
    ) -> None:
        self.request_id = ""
        self.adapter = adapter
        self.tier = tier
        self.label = adapter.name if adapter is not None else BASE_LABEL
        self.engine_requests: list[EngineRequest] = []
        self.status: Status | None = None  # set once, by `close`
        self._scopes = scopes
        self._ticket = ticket
        self._arrival_s = arrival_s
        self._handed_off = False
        # The request is the server's from admission on: rendering and tokenizing it is its work too, so
        # its first energy account opens now (the first engine request takes it over).
        self._admitted_account: EnergyAccount | None = scopes.books.open(self.label, tier, 0)

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
        engine = self._scopes.engine
        if len(prompts) == 1:
            sub = self._begin(self.request_id, prompts[0])
            async for step in engine.generate(prompts[0], spec, sub.request_id, adapter=self.adapter):
                self._on_step(sub, step)
                yield 0, step
            return
        queue: asyncio.Queue[tuple[int, GenerationStep | None, BaseException | None]] = asyncio.Queue()

        async def pump(index: int, prompt: PreparedPrompt) -> None:
            sub = self._begin(f"{self.request_id}-{index}", prompt)
            try:
                async for step in engine.generate(prompt, spec, sub.request_id, adapter=self.adapter):
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

    def _begin(self, request_id: str, prompt: PreparedPrompt) -> EngineRequest:
        account, self._admitted_account = self._admitted_account, None
        if account is None:
            account = self._scopes.books.open(self.label, self.tier, len(prompt.token_ids))
        account.prompt_tokens = len(prompt.token_ids)
        sub = EngineRequest(
            request_id,
            account,
            self._arrival_s,
            self._scopes.metrics.itl.new_counts(),
            prompt_tokens=len(prompt.token_ids),
        )
        self.engine_requests.append(sub)
        self._scopes.metrics.waiting.inc()
        return sub

    def _on_step(self, sub: EngineRequest, step: GenerationStep) -> None:
        # Runs once per engine step of every request: keep it to a few attribute updates.
        tokens = step.token_count
        if tokens:
            now = time.monotonic()
            if sub.first_token_s is None:
                sub.first_token_s = now
                self._scopes.books.ledger.first_token(sub.account)
                metrics = self._scopes.metrics
                metrics.waiting.dec()
                metrics.running.inc()
            else:
                sub.itl.observe(now - sub.last_token_s)
            sub.last_token_s = now
            sub.completion_tokens += tokens
            sub.account.decode_tokens += tokens
        if step.queue_s is not None:
            sub.queue_s = self._ticket.waited_s + step.queue_s
        if step.finished:
            sub.finished = True

    async def finish(self) -> EnergyFigures | None:
        """Close the scope as answered; with a meter, read it first so the energy is final.

        Returns:
            The request's energy, or None when the server does not meter energy.
        """
        books = self._scopes.books
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
        )

    def close(self, status: Status) -> None:
        """Release everything the request holds; only the first call does anything. Never awaits."""
        if self.status is not None:
            return
        self.status = status
        scopes = self._scopes
        now = time.monotonic()
        unfinished = []
        for sub in self.engine_requests:
            if sub.first_token_s is None:
                scopes.metrics.waiting.dec()
            else:
                scopes.metrics.running.dec()
            scopes.books.close(sub.account)
            if not sub.finished:
                unfinished.append(sub.request_id)
            scopes.metrics.record(
                RequestRecord(
                    adapter=self.label,
                    tier=self.tier,
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
            scopes.books.close(self._admitted_account)
            scopes.metrics.record_unserved(self.label, self.tier, status)
        if unfinished:
            scopes.abort_in_background(unfinished)
        self._ticket.release()
        if self.adapter is not None and scopes.adapters is not None:
            scopes.adapters.release(self.adapter)
        scopes.forget(self)

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
        elif not self._handed_off:
            self.close(Status.OK)


class RequestScopes:
    """Opens scopes, knows every open one, and owns the background engine aborts."""

    def __init__(  # noqa: PLR0917 - the scope's collaborators, wired once by the lifespan
        self,
        engine: Generator,
        served_model_name: str,
        adapters: AdapterRegistry | None,
        admission: AdmissionController,
        books: EnergyBooks,
        metrics: ServerMetrics,
        max_prompt_chars: int,
    ) -> None:
        self.engine = engine
        self.max_prompt_chars = max_prompt_chars
        self.served_model_name = served_model_name
        self.adapters = adapters
        self.admission = admission
        self.books = books
        self.metrics = metrics
        self._open: set[RequestScope] = set()
        self._none_open = asyncio.Event()
        self._none_open.set()
        self._aborts: set[asyncio.Task[None]] = set()

    @property
    def open_count(self) -> int:
        """Scopes not closed yet."""
        return len(self._open)

    def open_scopes(self) -> list[RequestScope]:
        """Every open scope (at shutdown, to cut them)."""
        return list(self._open)

    async def open(self, request: Request, model: str, tier: str) -> RequestScope:
        """Resolve and hold `model`, then wait for an admission slot, giving up if the client goes away.

        Raises:
            ModelNotFoundError: Nothing of that name is served (404).
            OverloadedError: The admission queue is full (429).
            ClientDisconnectedError: The client went away while queued.
        """
        arrival_s = time.monotonic()
        adapter = self._lease(model)
        try:
            ticket = await unless_disconnected(request, self.admission.admit())
        except BaseException:
            if adapter is not None and self.adapters is not None:
                self.adapters.release(adapter)
            raise
        scope = RequestScope(self, adapter, ticket, tier, arrival_s)
        self._open.add(scope)
        self._none_open.clear()
        return scope

    async def all_closed(self) -> None:
        """Return once no scope is open."""
        await self._none_open.wait()

    def interrupt_all(self) -> None:
        """Abort every unfinished engine request of every open scope (shutdown, engine death).

        Each request then ends on its own path: an aborted stream sends an error event and `[DONE]`, a
        non-streamed request answers 503, and each scope closes as usual.
        """
        unfinished = [
            sub.request_id for scope in self._open for sub in scope.engine_requests if not sub.finished
        ]
        if unfinished:
            self.abort_in_background(unfinished)

    def forget(self, scope: RequestScope) -> None:
        """Called by a scope as it closes."""
        self._open.discard(scope)
        if not self._open:
            self._none_open.set()

    def abort_in_background(self, request_ids: list[str]) -> None:
        """Abort engine requests from a task of its own (it outlives a cancelled request task)."""
        task = asyncio.get_running_loop().create_task(self._abort(request_ids))
        self._aborts.add(task)
        task.add_done_callback(self._aborts.discard)

    async def _abort(self, request_ids: list[str]) -> None:
        for request_id in request_ids:
            try:
                await self.engine.abort(request_id)
            except Exception:
                logger.exception("aborting %s in the engine failed", request_id)

    async def wait_for_aborts(self) -> None:
        """Wait until every background abort has been sent (at shutdown)."""
        if self._aborts:
            await asyncio.gather(*self._aborts, return_exceptions=True)

    def _lease(self, model: str) -> AdapterRef | None:
        if model == self.served_model_name:
            return None
        if self.adapters is not None:
            with contextlib.suppress(AdapterNotFoundError):
                return self.adapters.acquire(model)
        raise ModelNotFoundError(f"The model '{model}' does not exist.", param="model")


async def _disconnected(request: Request) -> None:
    # Reads the ASGI channel directly: request.is_disconnected() polls and misses disconnects behind
    # middleware. The body has already been read, so the next message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client goes away first.

    Raises:
        ClientDisconnectedError: The client went away.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ClientDisconnectedError("The client closed the connection.")
    return task.result()
