"""Engine death: in-flight requests get their error, then the process exits non-zero (or stays, if asked)."""

from __future__ import annotations

import asyncio

import pytest

from server.runtime.lifecycle import EXIT_ENGINE_DEAD, Lifecycle, cut_after_s
from tests.waiting import until


class Scopes:
    """The part of the request scopes the lifecycle uses; one request is in flight until `finish`."""

    def __init__(self) -> None:
        self.intake_closed = False
        self.interrupted = False
        self._closed = asyncio.Event()

    def close_intake(self) -> None:
        self.intake_closed = True

    def interrupt_all(self) -> None:
        self.interrupted = True
        self._closed.set()

    def finish(self) -> None:
        self._closed.set()

    async def all_closed(self) -> None:
        await self._closed.wait()


class DeadEngine:
    """An engine that has died; counts how often the lifecycle looked."""

    def __init__(self) -> None:
        self.looks = 0

    def __call__(self) -> bool:
        self.looks += 1
        return True


async def watch(keep_alive: bool) -> tuple[Lifecycle, Scopes, list[str]]:
    lifecycle, scopes, stopped, engine = Lifecycle(grace_s=30.0), Scopes(), [], DeadEngine()
    lifecycle.bind_server(lambda: stopped.append("stop"))
    lifecycle.watch_engine(engine, scopes, keep_alive)  # type: ignore[arg-type]
    # The watch acts on what it saw in the step that saw it: until its next await (for the requests'
    # errors) or its end (kept alive).
    await until(lambda: engine.looks > 0, "the lifecycle looking at the engine")
    return lifecycle, scopes, stopped


async def test_the_server_stops_non_zero_once_in_flight_requests_have_their_error() -> None:
    lifecycle, scopes, stopped = await watch(keep_alive=False)
    assert scopes.intake_closed
    assert lifecycle.exit_code == EXIT_ENGINE_DEAD
    assert stopped == []  # a request is still being answered
    scopes.finish()
    await until(lambda: stopped == ["stop"], "the server told to stop")
    assert not scopes.interrupted


async def test_keep_alive_leaves_the_server_answering() -> None:
    lifecycle, scopes, stopped = await watch(keep_alive=True)
    assert (lifecycle.exit_code, stopped, scopes.intake_closed) == (0, [], False)
    lifecycle.stop()


@pytest.mark.parametrize(
    ("grace_s", "cut_s"), [(30.0, 28.0), (90.0, 88.0), (4.0, 2.0), (1.0, 0.5), (0.0, 0.0)]
)
def test_requests_are_cut_just_before_the_grace_period_ends(grace_s: float, cut_s: float) -> None:
    """The documented grace: requests run until 2 s before it ends (half of a short one), not half of it."""
    assert cut_after_s(grace_s) == cut_s
