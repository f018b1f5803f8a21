"""The whole node as one meter: NVML for the GPUs, RAPL (or the estimate) for the host, each part named."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from server.cli import build_parser
from server.energy.meters import select
from server.energy.meters.base import EnergyMeterError
from server.energy.meters.combined import CombinedMeter, part_sources
from server.energy.meters.rapl import RaplMeter
from server.energy.meters.select import open_meter
from tests.unit.fake_nvml import FakeNvml
from tests.unit.test_energy_meters import powercap  # noqa: F401 - fixture
from tests.unit.test_worker_energy import gpus


@pytest.fixture
def node(monkeypatch: pytest.MonkeyPatch, powercap: Path) -> tuple[FakeNvml, Path]:  # noqa: F811
    nvml = FakeNvml(gpus())
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(select, "RaplMeter", lambda: RaplMeter(powercap))
    return nvml, powercap


def meter(kind: str, visible: str | None = "0,1") -> object:
    return open_meter(kind, cuda_visible_devices=visible, watts_per_core=10.0)


def test_nvml_and_rapl_read_as_one_meter_with_every_device_named(node: tuple[FakeNvml, Path]) -> None:
    nvml, rapl_root = node
    combined = meter("nvml+rapl")
    assert isinstance(combined, CombinedMeter)
    assert combined.source == "nvml+rapl"
    assert part_sources(combined.source) == ["nvml", "rapl"]
    assert combined.devices == [
        "nvml:gpu0",
        "nvml:gpu1",
        "rapl:intel-rapl:0/package-0",
        "rapl:intel-rapl:0:1/dram",
        "rapl:intel-rapl:1/package-1",
    ]
    nvml.gpus[1].energy_mj += 2000
    (rapl_root / "intel-rapl:1" / "energy_uj").write_text("3000000")
    # The GPU-only figure is the nvml devices' share of the same reading.
    assert combined.read_joules() == pytest.approx([0.0, 2.0, 0.0, 0.0, 3.0])


def test_node_is_the_gpus_and_the_host_where_each_can_be_metered(
    node: tuple[FakeNvml, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert meter("node").source == "nvml+rapl"

    def no_rapl() -> RaplMeter:
        raise EnergyMeterError("no RAPL here")

    monkeypatch.setattr(select, "RaplMeter", no_rapl)
    assert meter("node").source == "nvml+estimated"  # the host estimated, and labelled so
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([]))
    assert meter("node").source == "estimated"  # no GPU: the host alone


def test_a_named_part_that_cannot_open_stops_startup(node: tuple[FakeNvml, Path]) -> None:
    with pytest.raises(EnergyMeterError, match="no visible GPU"):
        meter("nvml+rapl", visible="GPU-ffff")


@pytest.mark.parametrize("kind", ["nvml+nvml", "gpu", "rapl+", "auto+rapl"])
def test_unknown_or_repeated_parts_are_refused_on_the_command_line(kind: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--energy-meter", kind])
    with pytest.raises(EnergyMeterError, match="unknown energy meter"):
        meter(kind)


def test_the_command_line_takes_combined_meters() -> None:
    assert (
        build_parser().parse_args(["serve", "--energy-meter", "nvml+estimated"]).energy_meter
        == "nvml+estimated"
    )
