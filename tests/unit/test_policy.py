"""The serving policy's background loops: one that crashes is logged, not lost."""

from __future__ import annotations

import asyncio
import logging

import pytest

from server.policy.admission import AdmissionController, EngineLoad
from server.policy.flex_lane import FlexLane
from server.policy.serving_policy import ServingPolicy


async def test_a_crashed_loop_is_logged_and_a_cancelled_one_is_not(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise TypeError("decide() takes keyword arguments")

    async def runs_until_stopped() -> None:
        await asyncio.Event().wait()

    load = EngineLoad(max_num_seqs=8)
    flex = FlexLane(load, max_queued=8, max_wait_s=1.0, batch_size=1)
    policy = ServingPolicy(load, AdmissionController(8, 8, load), flex)
    policy.spawn(broken())
    policy.spawn(runs_until_stopped())
    crashed, stopped = policy.tasks
    await asyncio.wait([crashed])  # no result taken here: only the policy's own callback sees the error
    policy.stop()
    await asyncio.gather(stopped, return_exceptions=True)
    # A task's done callbacks run in the order they were added: the policy's ran before ours woke us.
    errors = [
        record
        for record in caplog.records
        if record.levelno == logging.ERROR and record.name == "server.policy.serving_policy"
    ]
    assert len(errors) == 1
    assert "decide() takes keyword arguments" in errors[0].getMessage() + str(errors[0].exc_info)
    assert stopped.cancelled()
