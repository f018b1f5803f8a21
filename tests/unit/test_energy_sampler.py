"""The sampler logs a meter that stays broken once per failure, not ten times a second."""

from __future__ import annotations

import asyncio
import logging

import pytest

from server.energy.meters.base import EnergyMeterError
from server.energy.sampler import EnergySampler


class BrokenMeter:
    source = "fake"
    devices = ["dev0"]  # noqa: RUF012

    def __init__(self) -> None:
        self.failure: str | None = "engine gone"

    def read_joules(self) -> list[float]:
        if self.failure is not None:
            raise EnergyMeterError(self.failure)
        return [1.0]

    def close(self) -> None:
        pass


async def test_a_lasting_failure_is_logged_once_and_its_end_and_a_new_one_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    meter = BrokenMeter()
    readings: list[object] = []
    sampler = EnergySampler(meter, asyncio.get_running_loop(), period_s=3600)
    caplog.set_level(logging.INFO, logger="server.energy.sampler")
    sampler.start(readings.append)  # the thread reads once now, then waits out the period
    try:
        for _ in range(5):
            await sampler.read_now()
        meter.failure = None
        await sampler.read_now()
        meter.failure = "another failure"
        await sampler.read_now()
        await sampler.read_now()
    finally:
        sampler.stop()
    messages = [
        (record.levelname, str(record.exc_info[1]) if record.exc_info else None) for record in caplog.records
    ]
    assert messages == [
        ("ERROR", "engine gone"),
        ("INFO", None),
        ("ERROR", "another failure"),
    ]
    assert len(readings) == 1
