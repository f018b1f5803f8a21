"""The serving policy's background loops: one that crashes is logged, not lost."""

from __future__ import annotations

import asyncio
import logging

import pytest

from server.policy.serving_policy import _log_crash


async def test_a_crashed_loop_is_logged_and_a_cancelled_one_is_not(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise TypeError("decide() takes keyword arguments")

    crashed = asyncio.get_running_loop().create_task(broken())
    cancelled = asyncio.get_running_loop().create_task(asyncio.sleep(10))
    for task in (crashed, cancelled):
        task.add_done_callback(_log_crash)
    cancelled.cancel()
    await asyncio.gather(crashed, cancelled, return_exceptions=True)
    await asyncio.sleep(0)  # done callbacks run on the next loop turn
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "decide() takes keyword arguments" in caplog.text
