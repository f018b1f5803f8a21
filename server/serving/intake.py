"""Where requests enter: opening scopes (model lease, flex lane, admission), knowing the open ones, aborting.

`RequestScopes.open` resolves the model (404), waits a flex request's turn in the flex lane, then waits
for an admission slot (429 when full), giving up if the client goes away meanwhile; shutdown and engine
death go through it to stop intake and cut what still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from fastapi import Request

from adapters.errors import AdapterNotFoundError
from adapters.registry import AdapterRegistry
from adapters.types import AdapterRef
from server.api.disconnect import unless_disconnected
from server.energy.books import EnergyBooks
from server.errors import ModelNotFoundError
from server.observability.metrics import ServerMetrics
from server.policy.admission import AdmissionController
from server.policy.flex_lane import FlexLane
from server.serving.scope import Generator, RequestScope

logger = logging.getLogger(__name__)


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
        flex: FlexLane | None = None,
        prompt_tokens_details: bool = False,
    ) -> None:
        self.engine = engine
        self.prompt_tokens_details = prompt_tokens_details
        self.max_prompt_chars = max_prompt_chars
        self.flex = flex
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

        A flex request first waits its turn in the flex lane.

        Raises:
            ModelNotFoundError: Nothing of that name is served (404).
            OverloadedError: The admission queue or the flex lane is full (429).
            ClientDisconnectedError: The client went away while queued.
        """
        arrival_s = time.monotonic()
        adapter = self._lease(model)
        lane_wait_s, baseline_g_per_j = 0.0, None
        try:
            if tier == "flex" and self.flex is not None:
                # The grid as the request arrived: what running it at once would have cost per joule.
                arrival_g_per_j = self.books.ledger.grams_per_joule_at(arrival_s)
                entered_s, held_by_carbon = await unless_disconnected(request, self.flex.wait_turn())
                lane_wait_s = time.monotonic() - entered_s
                self.metrics.flex_wait.observe(lane_wait_s)
                if held_by_carbon:
                    baseline_g_per_j = arrival_g_per_j
            ticket = await unless_disconnected(request, self.admission.admit(tier, arrival_s))
        except BaseException:
            if adapter is not None and self.adapters is not None:
                self.adapters.release(adapter)
            raise
        scope = RequestScope(self, adapter, ticket, tier, arrival_s, (lane_wait_s, baseline_g_per_j))
        self._open.add(scope)
        self._none_open.clear()
        return scope

    def close_intake(self) -> None:
        """Take nothing more: queued requests and the flex lane's get 503 (shutdown, engine death)."""
        self.admission.close()
        if self.flex is not None:
            self.flex.close()

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
