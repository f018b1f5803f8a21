"""The energy pipeline on the event loop: readings and engine steps in, closed windows out to exporters.

sampler (thread) → `on_reading` → ledger → exporters. The request path opens and closes accounts here
and adds its output tokens to its account directly; nothing here blocks the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from server.energy.ledger import EnergyAccount, EnergyLedger, EnergyWindow
from server.energy.sampler import Reading


class EnergyExporter(Protocol):
    """Consumes what the ledger produces (Prometheus metrics, the `/v1/energy` summary)."""

    def export_window(self, window: EnergyWindow) -> None:
        """One closed interval."""
        ...

    def export_settled(self, account: EnergyAccount) -> None:
        """One request whose energy is final."""
        ...

    def export_power(self, watts: list[float]) -> None:
        """Each device's power over the last interval."""
        ...


class Sampler(Protocol):
    """What the books need from the sampler."""

    async def read_now(self) -> None:
        """Take a reading now (off the event loop) and hand it to `EnergyBooks.on_reading`."""
        ...


class EnergyBooks:
    """Owns the ledger for the server's life; `metering` is false with `--energy-meter none`."""

    def __init__(
        self,
        ledger: EnergyLedger,
        source: str,
        devices: Sequence[str],
        exporters: Sequence[EnergyExporter],
        sampler: Sampler,
    ) -> None:
        self.ledger = ledger
        self.source = source
        self.devices = list(devices)
        self.metering = source != "none"
        self.sampler = sampler
        self._exporters = list(exporters)
        self._last_reading: Reading | None = None

    def on_reading(self, reading: Reading) -> None:
        """Close the ledger interval ending at `reading` and export it (runs on the event loop)."""
        now_s, per_device_j = reading
        previous = self._last_reading
        if previous is not None and now_s > previous[0]:
            watts = [
                max(0.0, (j - p) / (now_s - previous[0]))
                for j, p in zip(per_device_j, previous[1], strict=True)
            ]
            for exporter in self._exporters:
                exporter.export_power(watts)
        if previous is None or now_s >= previous[0]:
            self._last_reading = reading
        window = self.ledger.reading(now_s, sum(per_device_j))
        if window is None:
            return
        for exporter in self._exporters:
            exporter.export_window(window)
            for account in window.settled:
                exporter.export_settled(account)

    def engine_step(self, produced_output: bool, waiting: int) -> None:
        """The engine ran a step (called by the engine's stat logger on the event loop)."""
        self.ledger.engine_step(produced_output, waiting)

    def open(self, adapter: str, tier: str, prompt_tokens: int) -> EnergyAccount:
        """Open the account of one engine request, as it is submitted."""
        account = EnergyAccount(adapter, tier, prompt_tokens, time.monotonic())
        self.ledger.open(account)
        return account

    def close(self, account: EnergyAccount) -> None:
        """The request left the engine; its energy is final once the current interval closes."""
        self.ledger.close(account, time.monotonic())
        if not self.metering and not account.settled:
            self.ledger.settle_unmetered(account)
            for exporter in self._exporters:
                exporter.export_settled(account)

    async def settle(self, accounts: Sequence[EnergyAccount]) -> None:
        """Close `accounts` and read the meter now, so their energy is final when this returns."""
        for account in accounts:
            self.close(account)
        if self.metering:
            await self.sampler.read_now()
