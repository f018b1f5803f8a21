"""`GET /v1/energy`: the energy summary as a pydantic model, kept up to date from the ledger's windows."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from server.energy.carbon import CarbonModel
from server.energy.ledger import PREFILL, EnergyAccount, EnergyWindow
from server.energy.meters.combined import part_sources
from server.energy.meters.device_probe import DeviceReading

WINDOW_S = 60.0


class DeviceEnergy(BaseModel):
    """One metered device; with the engine's workers as the meter, where it is and how it was read."""

    name: str
    watts: float
    node: str | None = None
    device: str | None = None
    kind: str | None = None  # "nvml", "estimated" or "unmetered" (a MIG instance: no counter of its own)
    joules: float | None = None  # since start; None where the device cannot be metered
    note: str | None = None  # why unmetered, or "shared with N other processes" (its GPU's whole draw)


class GroupEnergy(BaseModel):
    """Energy attributed to one adapter or one service tier since start."""

    requests: int = 0
    joules: float = 0.0
    dynamic_joules: float = 0.0
    prefill_joules: float = 0.0
    decode_joules: float = 0.0
    co2e_grams: float = 0.0
    output_tokens: int = 0
    joules_per_output_token: float | None = None
    dynamic_joules_per_output_token: float | None = None
    co2e_avoided_grams: float = 0.0
    flex_lane_wait_seconds: float = 0.0  # summed over the group's requests
    mean_flex_lane_wait_seconds: float | None = None


class EnergySummary(BaseModel):
    """Body of `GET /v1/energy`.

    `source` names the meter's parts (`nvml+rapl`); `estimated` is true when any of them is the CPU-time
    estimate, which is not a measurement.

    `joules` of a request or group is its full attributed share (static + dynamic); `dynamic_joules` is
    the part above the idle floor, what its work added. Metered = attributed + idle; attributed = static
    + dynamic. `metered_seconds` is the time the closed meter intervals cover, `busy_seconds` the part of
    it in which the engine held a request or ran a step.
    """

    source: str
    estimated: bool
    devices: list[DeviceEnergy]
    watts: float
    idle_floor_watts: float
    idle_floor_measured: bool
    joules_since_start: float
    attributed_joules: float
    static_joules: float
    dynamic_joules: float
    idle_joules: float
    idle_share: float | None
    metered_seconds: float
    busy_seconds: float
    output_tokens: int
    joules_per_output_token: float | None
    dynamic_joules_per_output_token: float | None
    joules_per_output_token_last_minute: float | None
    co2e_grams: float
    co2e_avoided_grams: float
    grid_intensity_g_per_kwh: float
    pue: float
    adapters: dict[str, GroupEnergy]
    tiers: dict[str, GroupEnergy]


@dataclass
class _Totals:
    metered_j: float = 0.0
    idle_j: float = 0.0
    static_j: float = 0.0
    dynamic_j: float = 0.0
    busy_s: float = 0.0
    metered_s: float = 0.0
    grams: float = 0.0
    output_tokens: int = 0


def _per_token(joules: float, tokens: int) -> float | None:
    return joules / tokens if tokens else None


class EnergySummaryExporter:
    """Accumulates windows into the totals `/v1/energy` reports; everything runs on the event loop."""

    def __init__(self, source: str, devices: list[str], carbon: CarbonModel) -> None:
        self._source = source
        self._devices = devices
        self._carbon = carbon
        self._watts = [0.0] * len(devices)
        self._totals = _Totals()
        self._floor_w = 0.0
        self._floor_measured = False
        self._avoided_g = 0.0
        self._adapters: dict[str, GroupEnergy] = {}
        self._tiers: dict[str, GroupEnergy] = {}
        # (end seconds, attributed J, output tokens) per window, for the last-minute J/token.
        self._recent: deque[tuple[float, float, int]] = deque()
        self._device_readings: Callable[[], Sequence[DeviceReading]] = tuple

    def use_meter(
        self, source: str, devices: list[str], device_readings: Callable[[], Sequence[DeviceReading]]
    ) -> None:
        """Report the engine's workers' meter, known once the engine runs, with each device's reading."""
        self._source, self._devices, self._watts = source, devices, [0.0] * len(devices)
        self._device_readings = device_readings

    def export_power(self, watts: list[float]) -> None:
        """Keep the latest power per device."""
        self._watts = watts

    def export_settled(self, account: EnergyAccount) -> None:
        """Count the request, its wait in the flex lane and the grams its shift avoided."""
        for groups, key in ((self._adapters, account.adapter), (self._tiers, account.tier)):
            group = groups.get(key) or groups.setdefault(key, GroupEnergy())
            group.requests += 1
            group.flex_lane_wait_seconds += account.lane_wait_s
            group.co2e_avoided_grams += account.avoided_grams
        self._avoided_g += account.avoided_grams

    def export_window(self, window: EnergyWindow) -> None:
        """Add one closed interval to the totals."""
        totals = self._totals
        totals.metered_j += window.metered_j
        totals.idle_j += window.idle_j
        totals.static_j += window.static_j
        totals.dynamic_j += window.dynamic_j
        totals.grams += window.idle_grams
        totals.metered_s += window.end_s - window.start_s
        if window.idle_j < window.metered_j:
            totals.busy_s += window.end_s - window.start_s
        self._floor_w, self._floor_measured = window.floor_w, window.floor_w > 0
        tokens = 0
        for (adapter, tier, phase), share in window.shares.items():
            totals.grams += share.grams
            tokens += share.output_tokens
            for groups, key in ((self._adapters, adapter), (self._tiers, tier)):
                group = groups.get(key) or groups.setdefault(key, GroupEnergy())
                group.joules += share.joules
                group.dynamic_joules += share.dynamic_j
                group.co2e_grams += share.grams
                group.output_tokens += share.output_tokens
                if phase == PREFILL:
                    group.prefill_joules += share.joules
                else:
                    group.decode_joules += share.joules
        totals.output_tokens += tokens
        self._recent.append((window.end_s, totals.static_j + totals.dynamic_j, totals.output_tokens))
        while self._recent and self._recent[0][0] < window.end_s - WINDOW_S:
            self._recent.popleft()

    def _device_figures(self) -> list[DeviceEnergy]:
        readings = {f"{r.node}/{r.device}": r for r in self._device_readings()}
        figures = []
        for name, watts in zip(self._devices, self._watts, strict=True):
            reading = readings.get(name)
            details = {}
            if reading is not None:
                details = {
                    "node": reading.node,
                    "device": reading.device,
                    "kind": reading.kind,
                    "joules": reading.joules,
                    "note": reading.note or None,
                }
            figures.append(DeviceEnergy(name=name, watts=watts, **details))
        return figures

    def summary(self) -> EnergySummary:
        """The current document."""
        totals = self._totals
        attributed_j = totals.static_j + totals.dynamic_j
        last_minute = None
        if len(self._recent) >= 2 and self._recent[-1][2] > self._recent[0][2]:
            (_, j0, t0), (_, j1, t1) = self._recent[0], self._recent[-1]
            last_minute = (j1 - j0) / (t1 - t0)

        def groups(source: dict[str, GroupEnergy]) -> dict[str, GroupEnergy]:
            return {
                key: group.model_copy(
                    update={
                        "joules_per_output_token": _per_token(group.joules, group.output_tokens),
                        "dynamic_joules_per_output_token": _per_token(
                            group.dynamic_joules, group.output_tokens
                        ),
                        "mean_flex_lane_wait_seconds": (
                            group.flex_lane_wait_seconds / group.requests if group.requests else None
                        ),
                    }
                )
                for key, group in source.items()
            }

        return EnergySummary(
            source=self._source,
            estimated="estimated" in part_sources(self._source),  # any part estimated: said so
            devices=self._device_figures(),
            watts=sum(self._watts),
            idle_floor_watts=self._floor_w,
            idle_floor_measured=self._floor_measured,
            joules_since_start=totals.metered_j,
            attributed_joules=attributed_j,
            static_joules=totals.static_j,
            dynamic_joules=totals.dynamic_j,
            idle_joules=totals.idle_j,
            idle_share=totals.idle_j / totals.metered_j if totals.metered_j else None,
            metered_seconds=totals.metered_s,
            busy_seconds=totals.busy_s,
            output_tokens=totals.output_tokens,
            joules_per_output_token=_per_token(attributed_j, totals.output_tokens),
            dynamic_joules_per_output_token=_per_token(totals.dynamic_j, totals.output_tokens),
            joules_per_output_token_last_minute=last_minute,
            co2e_grams=totals.grams,
            co2e_avoided_grams=self._avoided_g,
            grid_intensity_g_per_kwh=self._carbon.grid_g_per_kwh,
            pue=self._carbon.pue,
            adapters=groups(self._adapters),
            tiers=groups(self._tiers),
        )
