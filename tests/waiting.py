"""Waiting on observable state with a deadline, so a test synchronises on what happened, not on time.

A test waits for the state it needs (a count reached, a process ready) and fails with `what` if that
state never comes; the pause between checks only stops the check from spinning, it decides nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

POLL_S = 0.05


def wait_until(predicate: Callable[[], bool], what: str | Callable[[], str], timeout_s: float = 10.0) -> None:
    """Block until `predicate()` holds; fail the test after `timeout_s` seconds.

    `what` names the awaited state; a callable is asked at the failure, so it can tell what was seen last.
    """
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what() if callable(what) else what} did not happen within {timeout_s} s")
        time.sleep(POLL_S)  # polling state against a deadline, not a wait for time to pass


async def until(predicate: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Yield to the event loop until `predicate()` holds; fail the test after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout_s} s")
        await asyncio.sleep(POLL_S)  # polling state against a deadline, not a wait for time to pass


async def until_checked(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 10.0) -> None:
    """`until`, for a state that takes an await to read (a request to the app under test)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout_s} s")
        await asyncio.sleep(POLL_S)  # polling state against a deadline, not a wait for time to pass
