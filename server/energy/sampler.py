"""The sampler: a background thread that reads the meter periodically, never on the event loop."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from server.energy.meters.base import EnergyMeter, EnergyMeterError

logger = logging.getLogger(__name__)

Reading = tuple[float, list[float]]  # (monotonic seconds, cumulative joules per device)


def _unstarted(_: Reading) -> None:
    raise RuntimeError("the sampler hands readings on only once started")


class EnergySampler:
    """Reads `meter` every `period_s` on its own thread and hands each reading to `on_reading` on the loop."""

    def __init__(self, meter: EnergyMeter, loop: asyncio.AbstractEventLoop, period_s: float = 0.1) -> None:
        self._meter = meter
        self._on_reading: Callable[[Reading], None] = _unstarted
        self._loop = loop
        self._period_s = period_s
        self._lock = threading.Lock()  # meters keep state between reads
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wattserve-energy-sampler", daemon=True)
        self._failing: str | None = None  # the failure last logged, until a read succeeds again

    def _failed(self, err: EnergyMeterError) -> None:
        # A meter that stays broken (its engine died and the server is kept alive) fails ten times a
        # second: log each new failure once, with its traceback, and its end.
        if str(err) != self._failing:
            self._failing = str(err)
            logger.exception("energy meter read failed (logged again only when the failure changes)")

    def _succeeded(self) -> None:
        if self._failing is not None:
            self._failing = None
            logger.info("energy meter reads again")

    def start(self, on_reading: Callable[[Reading], None]) -> None:
        """Start the thread, handing each reading to `on_reading` on the loop; the first is taken at once."""
        self._on_reading = on_reading
        self._thread.start()

    def _read(self) -> Reading:
        with self._lock:
            return time.monotonic(), self._meter.read_joules()

    def _run(self) -> None:
        while True:
            try:
                reading = self._read()
            except EnergyMeterError as err:
                self._failed(err)
            else:
                self._succeeded()
                self._loop.call_soon_threadsafe(self._on_reading, reading)
            if self._stop.wait(self._period_s):
                return

    async def read_now(self) -> None:
        """Take a reading now on a worker thread, so a finishing request need not wait for the next tick."""
        try:
            reading = await asyncio.to_thread(self._read)
        except EnergyMeterError as err:
            self._failed(err)
            return
        self._succeeded()
        self._on_reading(reading)

    def stop(self) -> None:
        """Stop the thread and close the meter."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._meter.close()


class NullSampler:
    """The sampler with no meter (`--energy-meter none`): nothing is read, nothing is waited for."""

    def start(self, on_reading: Callable[[Reading], None]) -> None:
        """Nothing to start."""

    async def read_now(self) -> None:
        """Nothing to read."""

    def stop(self) -> None:
        """Nothing to stop."""
