"""The whole node through the app: a combined meter's parts named in usage.energy, /v1/energy and /metrics,
and its joules all attributed or idle (GPUs by a fake NVML, the host by RAPL on a fake powercap tree)."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from server.compose import create_app
from server.energy.carbon import CarbonModel
from server.energy.meters.combined import CombinedMeter
from server.energy.meters.nvml import NvmlMeter
from server.energy.meters.rapl import RaplMeter
from server.energy.summary import EnergySummaryExporter
from server.settings import ServerSettings
from tests.integration.fake_engine import FakeEngine
from tests.integration.test_energy_accounting import samples
from tests.unit.fake_nvml import FakeNvml
from tests.unit.test_worker_energy import gpus


def powercap(root: Path) -> Path:
    package = root / "intel-rapl:0"
    package.mkdir(parents=True)
    for name, value in (("name", "package-0"), ("energy_uj", "0"), ("max_energy_range_uj", "1000000000")):
        (package / name).write_text(value)
    return root


class Drawing:
    """The fake counters draw as the engine steps: each GPU 2 J and the package 1 J per step."""

    def __init__(self, nvml: FakeNvml, rapl_root: Path) -> None:
        self.nvml, self.energy_uj = nvml, rapl_root / "intel-rapl:0" / "energy_uj"

    def step(self) -> None:
        for gpu in self.nvml.gpus[:2]:
            gpu.energy_mj += 2000
        self.energy_uj.write_text(str(int(self.energy_uj.read_text()) + 1_000_000))


class DrawingEngine(FakeEngine):
    def __init__(self, drawing: Drawing) -> None:
        super().__init__(step_delay_s=0.002)
        self.drawing = drawing

    async def generate(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        async for step in super().generate(*args, **kwargs):  # type: ignore[arg-type]
            self.drawing.step()
            yield step


async def test_the_parts_of_a_node_meter_are_named_everywhere_and_add_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    nvml = FakeNvml(gpus())
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    meter = CombinedMeter([NvmlMeter("0,1"), RaplMeter(powercap(tmp_path))])
    engine = DrawingEngine(Drawing(nvml, tmp_path))
    app = create_app(ServerSettings(energy_sample_period_s=0.01), lambda: engine, meter=meter)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as http,
    ):
        body = {"model": FakeEngine.served_model_name, "prompt": "a b c", "max_tokens": 8}
        answer = (await http.post("/v1/completions", json=body)).json()
        sampler = app.state.wattserve.serving.intake.services.books.sampler
        sampler.stop()  # as in test_energy_accounting: the last reading taken here, then one state
        await sampler.read_now()
        summary = (await http.get("/v1/energy")).json()
        metrics = (await http.get("/metrics")).text
    assert answer["usage"]["energy"]["source"] == "nvml+rapl"
    assert answer["usage"]["energy"]["joules"] > 0
    assert (summary["source"], summary["estimated"]) == ("nvml+rapl", False)
    assert [device["name"] for device in summary["devices"]] == [
        "nvml:gpu0",
        "nvml:gpu1",
        "rapl:intel-rapl:0/package-0",
    ]
    # 8 steps: 2 GPUs x 2 J + 1 J of the package each, all of it metered, nothing lost between the parts.
    assert summary["joules_since_start"] == pytest.approx(8 * 5.0)
    assert set(samples(metrics, "wattserve_metered_energy_joules_total")) == {(("source", "nvml+rapl"),)}


@pytest.mark.parametrize(("source", "estimated"), [("nvml+estimated", True), ("nvml+rapl", False)])
def test_a_node_meter_with_an_estimated_part_says_so(source: str, estimated: bool) -> None:
    summary = EnergySummaryExporter(source, ["a", "b"], CarbonModel()).summary()
    assert (summary.source, summary.estimated) == (source, estimated)
