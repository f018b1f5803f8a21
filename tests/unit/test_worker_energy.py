"""Each engine worker meters its own device: found by UUID or PCI bus id on a fake NVML, MIG and shared
GPUs stated, the CPU estimate labelled; the API-side meter gathers the workers' readings."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from server.energy.meters.base import EnergyMeterError
from server.energy.meters.device_probe import (
    ESTIMATED,
    NVML,
    UNMETERED,
    DeviceProbe,
    DeviceReading,
    gpu_probe,
)
from server.energy.meters.nvml import MIG_NOTE
from server.engine.worker_energy import EXTENSION, EnergyWorkerExtension, add_energy_extension
from server.engine.worker_meter import WorkerEnergyMeter
from tests.unit.fake_nvml import FakeGpu, FakeNvml
from tests.waiting import wait_until

ENGINE_PIDS = {100, 101}


def gpus() -> list[FakeGpu]:
    # NVML's order (by bus id) differs from the order a CUDA_VISIBLE_DEVICES list gives.
    return [
        FakeGpu("GPU-aaaa-0000", "00000000:18:00.0", energy_mj=5_000_000),
        FakeGpu("GPU-bbbb-1111", "00000000:3B:00.0", energy_mj=7_000_000),
        FakeGpu("GPU-cccc-2222", "00000000:86:00.0", mig=True, mig_uuids=["MIG-dddd-3333", "MIG-eeee-4444"]),
    ]


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    fake = FakeNvml(gpus())
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


@pytest.fixture
def probes() -> Iterator[list[DeviceProbe]]:
    opened: list[DeviceProbe] = []
    yield opened
    for probe in opened:
        probe.stop()


def probe_of(opened: list[DeviceProbe], **identity: Any) -> DeviceProbe:
    defaults: dict[str, Any] = {
        "uuid": None,
        "pci_bus_id": None,
        "cuda_visible_devices": None,
        "local_index": 0,
    }
    probe = gpu_probe("node-a", **{**defaults, **identity}, engine_pids=ENGINE_PIDS, period_s=0.01)
    opened.append(probe)
    return probe


def test_integer_visible_devices_are_not_nvml_indices(nvml: FakeNvml, probes: list[DeviceProbe]) -> None:
    # CUDA_VISIBLE_DEVICES=2,0: the worker's cuda:1 is whatever bus id torch reports, not NVML index 1.
    probe = probe_of(probes, pci_bus_id="00000000:18:00.0", cuda_visible_devices="2,0", local_index=1)
    reading = probe.latest()
    assert (reading.device, reading.kind, reading.joules, reading.note) == ("GPU-aaaa-0000", NVML, 0.0, "")
    nvml.gpus[0].energy_mj += 2500
    nvml.gpus[1].energy_mj += 99_000  # another GPU's work is not this worker's
    wait_until(lambda: probe.latest().joules == 2.5, lambda: f"2.5 J read (last {probe.latest()})")


def test_gpu_uuid_form_is_found_by_uuid(nvml: FakeNvml, probes: list[DeviceProbe]) -> None:
    # torch reports the UUID without NVML's prefix; the bus id given is of another GPU: UUID wins.
    probe = probe_of(
        probes, uuid="bbbb-1111", pci_bus_id="00000000:18:00.0", cuda_visible_devices="GPU-bbbb-1111"
    )
    assert probe.latest().device == "GPU-bbbb-1111"


def test_pci_bus_id_is_used_when_the_uuid_is_unknown(nvml: FakeNvml, probes: list[DeviceProbe]) -> None:
    probe = probe_of(probes, uuid="ffff-9999", pci_bus_id="00000000:3B:00.0")
    assert (probe.latest().device, probe.latest().kind) == ("GPU-bbbb-1111", NVML)


@pytest.mark.parametrize(
    "identity",
    [
        {
            "cuda_visible_devices": "MIG-eeee-4444,MIG-dddd-3333",
            "local_index": 1,
            "pci_bus_id": "00000000:86:00.0",
        },
        {"uuid": "dddd-3333", "pci_bus_id": "00000000:86:00.0"},  # torch's UUID of a MIG instance
        {"pci_bus_id": "00000000:86:00.0"},  # only the parent's bus id: MIG mode on it tells
    ],
    ids=["visible-mig-uuid", "torch-mig-uuid", "parent-bus-id"],
)
def test_mig_is_stated_and_its_parent_never_booked(
    nvml: FakeNvml, probes: list[DeviceProbe], identity: dict[str, Any]
) -> None:
    reading = probe_of(probes, **identity).latest()
    assert (reading.kind, reading.joules) == (UNMETERED, None)
    assert reading.note.startswith(MIG_NOTE)
    assert nvml.gpus[2].energy_reads == 0


def test_a_gpu_shared_with_another_process_is_stated(nvml: FakeNvml, probes: list[DeviceProbe]) -> None:
    nvml.gpus[1].pids = [100, 101, 4242]
    reading = probe_of(probes, uuid="GPU-bbbb-1111").latest()
    assert (reading.kind, reading.note) == (NVML, "shared with 1 other processes")
    nvml.gpus[0].pids = [100]  # only this engine's processes: not shared
    assert probe_of(probes, uuid="GPU-aaaa-0000").latest().note == ""


def test_the_counter_never_decreases_across_a_driver_reload(
    nvml: FakeNvml, probes: list[DeviceProbe]
) -> None:
    probe = probe_of(probes, uuid="GPU-aaaa-0000")
    nvml.gpus[0].energy_mj += 1000
    wait_until(lambda: probe.latest().joules == 1.0, "1 J read")
    nvml.gpus[0].energy_mj = 500  # the driver reloaded: the counter restarted from 0
    wait_until(lambda: probe.latest().joules == 1.5, lambda: f"1.5 J read (last {probe.latest()})")


def test_no_nvml_leaves_the_gpu_unmetered_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(gpus(), init_fails=True))
    reading = gpu_probe(
        "node-a", uuid="aaaa-0000", pci_bus_id=None, cuda_visible_devices=None, local_index=0,
        engine_pids=set(), period_s=1,
    ).latest()  # fmt: skip
    assert (reading.kind, reading.joules) == (UNMETERED, None)
    assert "Driver Not Loaded" in reading.note


class CpuWorker(EnergyWorkerExtension):
    """What vLLM's CPU worker looks like to the extension."""

    device = torch.device("cpu")
    rank = 0


def test_a_cpu_worker_reports_a_labelled_estimate_that_grows() -> None:
    worker = CpuWorker()
    assert worker.wattserve_energy_pids() == {"pids": [os.getpid(), os.getppid()], "data_parallel_size": 1}
    first = DeviceReading.from_wire(worker.wattserve_energy_open([os.getpid()], 10.0, 0.01))
    assert (first.node, first.device, first.kind) == (socket.gethostname(), "cpu-rank0", ESTIMATED)
    assert "estimated" in first.note
    sum(i * i for i in range(3_000_000))  # CPU work in this process, the worker here

    def grown() -> bool:
        joules = DeviceReading.from_wire(worker.wattserve_energy_read()).joules
        return joules is not None and first.joules is not None and joules > first.joules

    wait_until(grown, "the estimate grew")
    worker._wattserve_energy_probe.stop()  # noqa: SLF001 - the probe thread the open started


def test_read_before_open_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="wattserve_energy_open"):
        CpuWorker().wattserve_energy_read()


class UserExtension(EnergyWorkerExtension):
    pass


class OtherExtension:
    pass


class Args:
    def __init__(self, extension: str = "") -> None:
        self.worker_extension_cls = extension


def test_the_extension_joins_the_engine_arguments_or_refuses_clearly() -> None:
    args = Args()
    assert add_energy_extension(args, required=True)  # type: ignore[arg-type]
    assert args.worker_extension_cls == EXTENSION
    subclass = Args(f"{__name__}.UserExtension")
    assert add_energy_extension(subclass, required=True)  # type: ignore[arg-type]
    assert subclass.worker_extension_cls == f"{__name__}.UserExtension"  # theirs, which meters too
    other = Args(f"{__name__}.OtherExtension")
    with pytest.raises(ValueError, match="subclass of server.engine.worker_energy.EnergyWorkerExtension"):
        add_energy_extension(other, required=True)  # type: ignore[arg-type]
    assert not add_energy_extension(other, required=False)  # type: ignore[arg-type]
    assert other.worker_extension_cls == f"{__name__}.OtherExtension"  # left alone


class FakeWorkers:
    """`collective_rpc` over fixed worker replies, on the event loop."""

    def __init__(self, readings: list[DeviceReading]) -> None:
        self.readings = readings
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail = False
        self.data_parallel = 1

    async def collective_rpc(
        self, method: str, args: tuple[Any, ...] = (), timeout_s: float | None = None
    ) -> list[Any]:
        self.calls.append((method, args))
        if self.fail:
            raise RuntimeError("Engine core died")
        if method == "wattserve_energy_pids":
            return [
                {"pids": [200 + i], "data_parallel_size": self.data_parallel}
                for i in range(len(self.readings))
            ]
        return [reading.to_wire() for reading in self.readings]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    running = asyncio.new_event_loop()
    thread = threading.Thread(target=running.run_forever, daemon=True)
    thread.start()
    yield running
    running.call_soon_threadsafe(running.stop)
    thread.join(timeout=5)
    running.close()


def open_meter(workers: FakeWorkers, loop: asyncio.AbstractEventLoop) -> WorkerEnergyMeter:
    opening = WorkerEnergyMeter.open(workers, watts_per_core=15.0, period_s=0.1, timeout_s=2)
    return asyncio.run_coroutine_threadsafe(opening, loop).result(timeout=10)


def test_the_meter_gathers_every_workers_device(loop: asyncio.AbstractEventLoop) -> None:
    workers = FakeWorkers([
        DeviceReading("node-a", "GPU-aaaa", NVML, 10.0),
        DeviceReading("node-b", "GPU-bbbb", NVML, 50.0, "shared with 1 other processes"),
        DeviceReading("node-b", "MIG-dddd", UNMETERED, None, MIG_NOTE),
        DeviceReading("node-b", "GPU-bbbb", NVML, 50.0),  # a second worker on the same GPU: counted once
    ])  # fmt: skip
    meter = open_meter(workers, loop)
    assert (meter.source, meter.devices) == (
        "nvml",
        ["node-a/GPU-aaaa", "node-b/GPU-bbbb", "node-b/MIG-dddd"],
    )
    open_call = workers.calls[1]
    assert open_call[0] == "wattserve_energy_open"
    assert {200, 201, 202, 203, os.getpid()} <= set(open_call[1][0])  # every engine process is the engine's
    assert meter.read_joules() == [0.0, 0.0, 0.0]
    workers.readings[0] = DeviceReading("node-a", "GPU-aaaa", NVML, 12.5)
    workers.readings[1] = DeviceReading("node-b", "GPU-bbbb", NVML, 51.0, "shared with 1 other processes")
    assert meter.read_joules() == [2.5, 1.0, 0.0]
    mig = meter.device_readings()[2]
    assert (mig.joules, mig.note) == (None, MIG_NOTE)
    assert meter.device_readings()[1].note == "shared with 1 other processes"
    workers.readings[0] = DeviceReading("node-a", "GPU-aaaa", NVML, 1.0)  # a restarted probe: never back
    assert meter.read_joules()[0] == 2.5


def test_an_estimate_among_the_workers_labels_the_total(loop: asyncio.AbstractEventLoop) -> None:
    workers = FakeWorkers([DeviceReading("node-a", "cpu-rank0", ESTIMATED, 3.0, "estimated")])
    assert open_meter(workers, loop).source == "estimated"


def test_workers_with_nothing_meterable_are_refused(loop: asyncio.AbstractEventLoop) -> None:
    workers = FakeWorkers([DeviceReading("node-a", "MIG-dddd", UNMETERED, None, MIG_NOTE)])
    with pytest.raises(EnergyMeterError, match="node-a/MIG-dddd: mig"):
        open_meter(workers, loop)


def test_rpc_failures_become_meter_errors(loop: asyncio.AbstractEventLoop) -> None:
    workers = FakeWorkers([DeviceReading("node-a", "GPU-aaaa", NVML, 10.0)])
    meter = open_meter(workers, loop)
    workers.fail = True
    with pytest.raises(EnergyMeterError, match="Engine core died"):
        meter.read_joules()
    workers.fail = False
    failing = FakeWorkers([])
    failing.fail = True
    with pytest.raises(EnergyMeterError, match="cannot be metered"):
        open_meter(failing, loop)


def test_a_data_parallel_engine_is_refused(loop: asyncio.AbstractEventLoop) -> None:
    workers = FakeWorkers([DeviceReading("node-a", "GPU-aaaa", NVML, 10.0)])
    workers.data_parallel = 2
    with pytest.raises(EnergyMeterError, match="data-parallel"):
        open_meter(workers, loop)


def test_reading_on_the_event_loop_is_refused(loop: asyncio.AbstractEventLoop) -> None:
    meter = open_meter(FakeWorkers([DeviceReading("node-a", "GPU-aaaa", NVML, 10.0)]), loop)

    async def read_on_loop() -> list[float]:
        return meter.read_joules()

    with pytest.raises(EnergyMeterError, match="off the event loop"):
        asyncio.run_coroutine_threadsafe(read_on_loop(), loop).result(timeout=10)
