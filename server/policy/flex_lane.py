"""The flex lane: `service_tier: flex` requests wait here to ride along a running batch, or to fill one.

A request in the lane holds nothing (no admission slot, no engine place) and so pays no energy while it
waits. It leaves the lane, oldest first, when:
- the engine is running and its batch has room: it rides along work that runs anyway, at most
  `riders_per_step` per engine step, so that the riders' prefills spread over steps instead of landing
  together in the first steps of the request they join (on a CPU, or a GPU in its compute-bound prefill,
  a step's time grows with the tokens it takes);
- the engine is idle and enough flex requests wait to fill a batch of their own (`batch_size`);
- it has waited `max_wait_s` (never starved): then it is admitted ahead of default requests that came
  after it.
While a carbon gate holds (grid intensity above the limit), only the third applies.

Invariants: the lane never holds more than `max_queued` requests (one more gets 429); a request leaves it
exactly once, released or gone (client disconnect, shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from server.errors import EngineUnavailableError, OverloadedError
from server.policy.admission import EngineLoad

logger = logging.getLogger(__name__)

TICK_S = 0.05


@dataclass(eq=False)
class _Place:
    entered_s: float
    future: asyncio.Future[bool] = field(repr=False)  # set when the request may go on


class FlexLane:
    """Holds flex requests until the engine can take them at little energy cost."""

    def __init__(
        self,
        load: EngineLoad,
        *,
        max_queued: int,
        max_wait_s: float,
        batch_size: int,
        riders_per_step: int = 1,
        carbon_hold: Callable[[], bool] = lambda: False,
    ) -> None:
        self.load = load
        self.max_queued = max_queued
        self.max_wait_s = max_wait_s
        self.batch_size = batch_size
        self.riders_per_step = riders_per_step
        self.carbon_hold = carbon_hold
        self.closed = False
        self._places: list[_Place] = []
        self._ticker: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Requests in the lane."""
        return len(self._places)

    async def wait_turn(self) -> tuple[float, bool]:
        """Wait in the lane until released.

        Returns:
            The arrival time (monotonic seconds) to queue with, and whether the carbon gate held it.

        Raises:
            OverloadedError: The lane is full (429).
            EngineUnavailableError: The server is shutting down.
        """
        if self.closed:
            raise EngineUnavailableError("The server is shutting down; it takes no new requests.")
        if len(self._places) >= self.max_queued:
            raise OverloadedError(
                f"The flex lane is full ({len(self._places)} waiting); retry later or use another tier.",
                retry_after_s=max(1, round(self.max_wait_s)),
            )
        place = _Place(time.monotonic(), asyncio.get_running_loop().create_future())
        self._places.append(place)
        held_by_carbon = self.carbon_hold()
        self._release()
        if not place.future.done():
            self._ensure_ticking()
        try:
            await place.future
        finally:
            if place in self._places:  # gone while waiting
                self._places.remove(place)
        return place.entered_s, held_by_carbon

    def close(self) -> None:
        """Release nothing more: waiting requests get 503 (shutdown)."""
        self.closed = True
        for place in self._places:
            if not place.future.done():
                place.future.set_exception(EngineUnavailableError("The server is shutting down."))
        self._places.clear()
        if self._ticker is not None:
            self._ticker.cancel()

    def on_step(self) -> None:
        """An engine step ended (its counts are in `load`): the next riders may board."""
        if self._places:
            self._release()

    def _ensure_ticking(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while self._places:
            await asyncio.sleep(TICK_S)
            self._release()

    def _release(self) -> None:
        """Let out whoever may go now, oldest first."""
        now = time.monotonic()
        due = [place for place in self._places if now - place.entered_s >= self.max_wait_s]
        for place in due:
            self._let_out(place)
        if not self._places or self.carbon_hold():
            return
        room = self.load.room
        if room <= 0:
            return
        if self.load.running == 0:  # a batch of their own on an idle engine, or none
            leaving = room if len(self._places) >= self.batch_size else 0
        else:  # riders, a few per step
            leaving = min(room, self.riders_per_step - self.load.let_in)
        for place in self._places[: max(0, leaving)]:
            self._let_out(place)

    def _let_out(self, place: _Place) -> None:
        self._places.remove(place)
        self.load.let_in += 1
        if not place.future.done():
            place.future.set_result(True)
