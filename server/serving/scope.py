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
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from adapters.types import AdapterRef
from server.energy.ledger import EnergyAccount
from server.engine.types import GenerationStep, PreparedPrompt, SamplingSpec
from server.errors import ClientDisconnectedError
from server.observability.histograms import BucketCounts
from server.observability.metrics import BASE_LABEL, RequestRecord, Status
from server.policy.admission import Ticket

if TYPE_CHECKING:
    from server.serving.intake import RequestScopes

logger = logging.getLogger(__name__)

ADAPTER_VERSION_HEADER = "x-adapter-version"
# vLLM's priority value per tier (lower first); it orders the engine's queue under --scheduling-policy
# priority and is ignored under fcfs, where admission does the ordering.
ENGINE_PRIORITY = {"priority": -1, "default": 0, "flex": 1}


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
    cached_tokens: int = 0
    finished: bool = False


class RequestScope:
    """A request's hold on its model version, its admission slot, its energy accounts and its metrics."""

    def __init__(  # noqa: PLR0917 - everything `RequestScopes.open` established, handed over once
        self,
        scopes: RequestScopes,
        adapter: AdapterRef | None,
        ticket: Ticket,
        tier: str,
        arrival_s: float,
        flex_lane: tuple[float, float | None] = (0.0, None),
    ) -> None:
        self.request_id = ""
        self.adapter = adapter
        self.tier = tier
        self.label = adapter.name if adapter is not None else BASE_LABEL
        self.priority = ENGINE_PRIORITY.get(tier, 0)
        self.engine_requests: list[EngineRequest] = []
        self.status: Status | None = None  # set once, by `close`
        self._scopes = scopes
        self._ticket = ticket
        self._arrival_s = arrival_s
        self._handed_off = False
        # The request is the server's from admission on: rendering and tokenizing it is its work too, so
        # its first energy account opens now (the first engine request takes it over).
        self._flex_lane = flex_lane  # seconds waited in the flex lane, grams per joule at arrival if held
        self._admitted_account: EnergyAccount | None = self._open_account(0)

    @property
    def prompt_tokens_details(self) -> bool:
        """Whether usage reports the prompt tokens served from the prefix cache."""
        return self._scopes.prompt_tokens_details

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
            async for step in engine.generate(
                prompts[0], spec, sub.request_id, adapter=self.adapter, priority=self.priority
            ):
                self._on_step(sub, step)
                yield 0, step
            return
        queue: asyncio.Queue[tuple[int, GenerationStep | None, BaseException | None]] = asyncio.Queue()

        async def pump(index: int, prompt: PreparedPrompt) -> None:
            sub = self._begin(f"{self.request_id}-{index}", prompt)
            try:
                async for step in engine.generate(
                    prompt, spec, sub.request_id, adapter=self.adapter, priority=self.priority
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
        account = self._scopes.books.open(self.label, self.tier, prompt_tokens)
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
        if step.cached_tokens is not None:
            sub.cached_tokens = step.cached_tokens
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
