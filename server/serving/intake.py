"""Where requests enter: opening scopes (model lease, flex lane, admission), knowing the open ones, cutting.

`RequestIntake.open` resolves the model (404), waits a flex request's turn in the flex lane, then waits
for an admission slot (429 when full), giving up if the client goes away meanwhile; shutdown and engine
death go through it to stop intake and cut what still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import Protocol, TypeVar

from adapters.errors import AdapterNotFoundError
from adapters.types import AdapterRef
from server.errors import ModelNotFoundError
from server.policy.admission import AdmissionController
from server.policy.flex_lane import FlexLane
from server.serving.prepare import InputLimits
from server.serving.scope import RequestScope, ScopeServices
from server.tiers import Tier

logger = logging.getLogger(__name__)

T = TypeVar("T")


class UntilGone(Protocol):
    """Awaits some work unless the client goes away first (then raises `ClientDisconnectedError`).

    The HTTP layer supplies it: this layer knows no connection.
    """

    def __call__(self, work: Awaitable[T], /) -> Awaitable[T]:
        """Await `work`, cancelling it if the client leaves."""
        ...


class AdapterResolver(Protocol):
    """Loads an adapter a request names that is not loaded yet (`adapters.resolver.FolderResolver`)."""

    async def resolve(self, name: str) -> bool:
        """Make `name` served if it can be found; False if not (raises if found and refused)."""
        ...


class RequestIntake:
    """Opens scopes, knows every open one, and closes intake at shutdown or engine death."""

    def __init__(
        self,
        services: ScopeServices,
        served_model_names: Sequence[str],
        admission: AdmissionController,
        flex: FlexLane,
        limits: InputLimits,
        *,
        resolver: AdapterResolver | None = None,
    ) -> None:
        self.services = services
        self.resolver = resolver
        self.served_model_names = frozenset(served_model_names)
        self.admission = admission
        self.flex = flex
        self.limits = limits
        self._open: set[RequestScope] = set()
        self._none_open = asyncio.Event()
        self._none_open.set()

    @property
    def open_count(self) -> int:
        """Scopes not closed yet."""
        return len(self._open)

    def open_scopes(self) -> list[RequestScope]:
        """Every open scope (at shutdown, to cut them)."""
        return list(self._open)

    async def open(self, model: str, tier: Tier, until_gone: UntilGone) -> RequestScope:
        """Resolve and hold `model`, then wait for an admission slot, giving up if the client goes away.

        A flex request first waits its turn in the flex lane.

        Raises:
            ModelNotFoundError: Nothing of that name is served (404).
            AdapterError: An adapter folder of that name could not be loaded on this first request.
            OverloadedError: The admission queue or the flex lane is full (429).
            ClientDisconnectedError: The client went away while queued.
        """
        arrival_s = time.monotonic()
        adapter = await self._lease(model, until_gone)
        lane_wait_s, baseline_g_per_j = 0.0, None
        adapters = self.services.adapters
        try:
            if tier.waits_in_lane:
                # The grid as the request arrived: what running it at once would have cost per joule.
                arrival_g_per_j = self.services.books.ledger.grams_per_joule_at(arrival_s)
                entered_s, held_by_carbon = await until_gone(self.flex.wait_turn())
                lane_wait_s = time.monotonic() - entered_s
                self.services.metrics.flex_wait.observe(lane_wait_s)
                if held_by_carbon:
                    baseline_g_per_j = arrival_g_per_j
            ticket = await until_gone(self.admission.admit(tier, arrival_s))
        except BaseException:
            if adapter is not None and adapters is not None:
                adapters.release(adapter)
            raise
        scope = RequestScope(
            self.services, self._closed, adapter, ticket, tier, arrival_s, (lane_wait_s, baseline_g_per_j)
        )
        self._open.add(scope)
        self._none_open.clear()
        return scope

    def close_intake(self) -> None:
        """Take nothing more: queued requests and the flex lane's get 503 (shutdown, engine death)."""
        self.admission.close()
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
            self.services.aborts.abort_in_background(unfinished)

    def _closed(self, scope: RequestScope) -> None:
        self._open.discard(scope)
        if not self._open:
            self._none_open.set()

    async def _lease(self, model: str, until_gone: UntilGone) -> AdapterRef | None:
        if model in self.served_model_names:
            return None
        adapters = self.services.adapters
        if adapters is not None:
            with contextlib.suppress(AdapterNotFoundError):
                return adapters.acquire(model)
            # Only a name nothing serves reaches the resolver: served names never leave the event loop.
            if self.resolver is not None and await until_gone(self.resolver.resolve(model)):
                with contextlib.suppress(AdapterNotFoundError):  # unloaded again meanwhile
                    return adapters.acquire(model)
        raise ModelNotFoundError(f"The model '{model}' does not exist.", param="model")
