"""Meters: RAPL on a fake powercap tree (with wrap), the CPU-time estimate, the null meter, selection,
NVML on a fake NVML (CUDA_VISIBLE_DEVICES by index or UUID; MIG refused)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from server.energy.meters.base import EnergyMeterError, NullEnergyMeter
from server.energy.meters.estimated import EstimatedMeter
from server.energy.meters.nvml import NvmlMeter, visible_devices
from server.energy.meters.rapl import RaplMeter
from server.energy.meters.select import open_meter
from tests.unit.fake_nvml import FakeNvml
from tests.unit.test_worker_energy import gpus


def zone(path: Path, name: str, energy_uj: int, range_uj: int = 1_000_000) -> Path:
    path.mkdir(parents=True)
    (path / "name").write_text(f"{name}\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{range_uj}\n")
    return path


@pytest.fixture
def powercap(tmp_path: Path) -> Path:
    package = zone(tmp_path / "intel-rapl:0", "package-0", 900_000)
    zone(package / "intel-rapl:0:0", "core", 5)
    zone(package / "intel-rapl:0:1", "dram", 100)
    zone(tmp_path / "intel-rapl:1", "package-1", 0)
    return tmp_path


def test_rapl_reads_packages_and_dram_only(powercap: Path) -> None:
    meter = RaplMeter(powercap)
    assert meter.devices == ["intel-rapl:0/package-0", "intel-rapl:0:1/dram", "intel-rapl:1/package-1"]
    assert meter.read_joules() == [0.0, 0.0, 0.0]
    (powercap / "intel-rapl:0" / "intel-rapl:0:1" / "energy_uj").write_text("2100")
    (powercap / "intel-rapl:1" / "energy_uj").write_text("3000000")
    assert meter.read_joules() == pytest.approx([0.0, 0.002, 3.0])


def test_rapl_counter_wrap(powercap: Path) -> None:
    meter = RaplMeter(powercap)
    energy = powercap / "intel-rapl:0" / "energy_uj"
    energy.write_text("999999")  # +99_999 µJ
    assert meter.read_joules()[0] == pytest.approx(0.099999)
    energy.write_text("50")  # wrapped: 1 µJ up to the range, then 50
    assert meter.read_joules()[0] == pytest.approx(0.099999 + 0.000051)


def test_rapl_without_zones_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EnergyMeterError):
        RaplMeter(tmp_path)


def test_estimate_grows_with_cpu_work_and_is_labelled() -> None:
    meter = EstimatedMeter(watts_per_core=10.0)
    assert meter.source == "estimated"
    first = meter.read_joules()[0]
    sum(i * i for i in range(3_000_000))
    assert meter.read_joules()[0] > first


def test_null_meter_and_selection() -> None:
    assert NullEnergyMeter().read_joules() == []
    assert open_meter("none", cuda_visible_devices=None, watts_per_core=1).source == "none"
    assert open_meter("estimated", cuda_visible_devices=None, watts_per_core=1).source == "estimated"
    with pytest.raises(EnergyMeterError):
        open_meter("bogus", cuda_visible_devices=None, watts_per_core=1)


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        (None, ["gpu0", "gpu1", "gpu2"]),
        ("2,0", ["gpu2", "gpu0"]),
        ("1, 7", ["gpu1"]),
        ("GPU-bbbb-1111,GPU-aaaa", ["GPU-bbbb-1111", "GPU-aaaa-0000"]),  # full UUIDs and CUDA's prefixes
        ("GPU-ffff", []),
    ],
)
def test_cuda_visible_devices_mapping(visible: str | None, expected: list[str]) -> None:
    nvml = FakeNvml(gpus())
    assert [name for name, _ in visible_devices(nvml, visible)] == expected


def test_the_nvml_meter_reads_gpus_named_by_uuid(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml(gpus())
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    meter = NvmlMeter("GPU-bbbb-1111")
    nvml.gpus[1].energy_mj += 3000
    nvml.gpus[0].energy_mj += 90_000  # not named
    assert (meter.devices, meter.read_joules()) == (["GPU-bbbb-1111"], [3.0])


def test_the_nvml_meter_refuses_mig_lists_saying_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(gpus()))
    with pytest.raises(
        EnergyMeterError, match="MIG instances .*MIG-dddd-3333.* no per-instance energy counter"
    ):
        NvmlMeter("MIG-dddd-3333")
    with pytest.raises(EnergyMeterError, match="no visible GPU .CUDA_VISIBLE_DEVICES='GPU-ffff'"):
        NvmlMeter("GPU-ffff")
