"""The GPU A/B benchmark's processes and rounds without a GPU: client signals, process groups, run order."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from benchmarks import gpu_ab
from benchmarks.gpu_ab_run import ClientError, run_client
from loadtest.processes import start_server, stop_server

# A stand-in for vLLM's client that speaks the same signals: argv is fd-to-parent, fd-from-parent, then
# a marker file it writes between "start" and "end", then how to behave.
FAKE_CLIENT = textwrap.dedent(
    """\
    import os, sys
    to_parent, from_parent, marker, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if mode == "silent":
        sys.exit(3)
    os.write(to_parent, b"start\\n"); os.read(from_parent, 1)
    open(marker, "w").write("ran")
    os.write(to_parent, b"end\\n"); os.read(from_parent, 1)
    sys.exit(4 if mode == "fail" else 0)
    """
)


def test_the_callbacks_bracket_the_clients_run_while_it_waits(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    seen = []

    def on_start() -> None:
        seen.append(("start", marker.exists()))

    def on_end() -> None:
        seen.append(("end", marker.exists()))

    run_client(
        [sys.executable, "-c", FAKE_CLIENT],
        [str(marker), "ok"],
        tmp_path / "client.log",
        on_start=on_start,
        on_end=on_end,
    )
    assert seen == [("start", False), ("end", True)]


@pytest.mark.parametrize(
    ("mode", "message"), [("silent", "exited with 3 before signalling 'start'"), ("fail", "exited with 4")]
)
def test_a_failing_client_is_reported_with_its_log(tmp_path: Path, mode: str, message: str) -> None:
    calls = []
    with pytest.raises(ClientError, match=message) as raised:
        run_client(
            [sys.executable, "-c", FAKE_CLIENT],
            [str(tmp_path / "ran"), mode],
            tmp_path / "client.log",
            on_start=lambda: calls.append("start"),
            on_end=lambda: calls.append("end"),
        )
    assert str(tmp_path / "client.log") in str(raised.value)
    assert calls == ([] if mode == "silent" else ["start", "end"])


# A server that answers /health and has a child in its process group, as vLLM's engine core is.
FAKE_SERVER = textwrap.dedent(
    """\
    import http.server, subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # must outlive the step
    open(sys.argv[1], "w").write(str(child.pid))
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers()
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[3])), Health).serve_forever()
    """
)


def _gone(pid: int) -> bool:
    # A killed process not yet reaped by its new parent shows as a zombie: it holds nothing any more.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_stopping_a_server_stops_its_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    process, url = start_server(
        [sys.executable, "-c", FAKE_SERVER, str(pid_file)], tmp_path / "server.log", dict(os.environ), 30
    )
    child = int(pid_file.read_text())
    assert os.getpgid(process.pid) == process.pid != os.getpgid(0)
    assert os.getpgid(child) == process.pid
    assert url.startswith("http://127.0.0.1:")

    stop_server(process, grace_s=10)
    assert process.returncode is not None
    assert _gone(child)


# --- rounds, with the servers and the client faked ---


class FakeEnergy:
    """One GPU whose counter grows 100 J at every read."""

    def __init__(self) -> None:
        self.joules = 0.0
        self.closed = False

    def read_j(self) -> list[float]:
        self.joules += 100.0
        return [self.joules]

    def environment(self) -> dict[str, Any]:
        return {"gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3"}], "driver_version": "580"}

    def close(self) -> None:
        self.closed = True


class FakeProcess:
    returncode = None

    def poll(self) -> None:
        return None


METRICS = """\
# TYPE wattserve_metered_energy_joules_total counter
wattserve_metered_energy_joules_total{source="nvml"} %s
"""


@pytest.fixture
def fake_world(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Fake servers (wattserve faster than vLLM) and client; `events` records what happened in order."""
    world: dict[str, Any] = {"events": [], "warmup_completed": None, "scrapes": 0}

    def start(command: list[str], log_path: Path, env: dict, timeout_s: float) -> tuple[FakeProcess, str]:
        server = "wattserve" if command[1:3] == ["-m", "server"] else "vllm"
        world["events"].append(("start", server, env["CUDA_DEVICE_ORDER"]))
        return FakeProcess(), f"http://{server}"

    def client(
        prefix: list[str], flags: list[str], log_path: Path, *, on_start: Any, on_end: Any, env: Any
    ) -> None:
        def value(name: str) -> str:
            return flags[flags.index(name) + 1]

        server = value("--base-url").removeprefix("http://")
        prompts, concurrency = int(value("--num-prompts")), int(value("--max-concurrency"))
        world["events"].append(("client", server, concurrency, int(value("--seed"))))
        on_start()
        on_end()
        warmup = value("--result-filename").endswith("warmup.client.json")
        completed = world["warmup_completed"] if warmup and world["warmup_completed"] else prompts
        faster = server == "wattserve"
        result = {
            "completed": completed,
            "failed": prompts - completed,
            "total_output_tokens": completed * 256,
            "duration": 10.0,
            "output_throughput": 1100.0 if faster else 1000.0,
            "median_ttft_ms": 40.0 if faster else 50.0,
            "p99_ttft_ms": 90.0,
            "median_itl_ms": 12.0,
            "p99_itl_ms": 30.0,
        }
        (Path(value("--result-dir")) / value("--result-filename")).write_text(json.dumps(result))

    def scraper(url: str) -> Any:
        def scrape() -> str:
            world["scrapes"] += 1
            return METRICS % (world["scrapes"] * 99.0)

        return scrape

    monkeypatch.setattr(gpu_ab, "start_server", start)
    monkeypatch.setattr(gpu_ab, "stop_server", lambda process: world["events"].append(("stop",)))
    monkeypatch.setattr(gpu_ab, "run_client", client)
    monkeypatch.setattr(gpu_ab, "_scraper", scraper)
    return world


def _args(tmp_path: Path, *extra: str) -> Any:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')  # an existing model: nothing is trained
    argv = ["--out", str(tmp_path / "out"), "--model-dir", str(model), "--concurrency", "8", "64", *extra]
    return gpu_ab.build_parser().parse_args(argv)


def test_rounds_alternate_servers_warm_up_first_and_record_every_run(
    tmp_path: Path, fake_world: dict
) -> None:
    report = gpu_ab.run(_args(tmp_path), FakeEnergy(), {"vllm": "0.24.0"})

    def visit(server: str) -> list[tuple]:
        return [
            ("start", server, "PCI_BUS_ID"),
            ("client", server, 64, 0),  # the warm-up, at the largest concurrency, with its own prompts
            ("client", server, 8, 1),
            ("client", server, 64, 2),
            ("stop",),
        ]

    assert fake_world["events"] == visit("wattserve") + visit("vllm") + visit("vllm") + visit("wattserve")
    runs = report["runs"]
    assert [(run["round"], run["server"], run["concurrency"]) for run in runs] == [
        (0, "wattserve", 8), (0, "wattserve", 64), (0, "vllm", 8), (0, "vllm", 64),
        (1, "vllm", 8), (1, "vllm", 64), (1, "wattserve", 8), (1, "wattserve", 64),
    ]  # fmt: skip
    assert all(run["gpu_energy_j"] == 100.0 for run in runs)  # one read before, one after each run
    assert runs[0]["wattserve_metered_energy_j"] == 99.0
    assert runs[0]["wattserve_energy_source"] == "nvml"
    assert "wattserve_counter_deltas" not in runs[2]
    assert report["pass"] is True
    saved = json.loads((tmp_path / "out" / "gpu_ab.json").read_text())
    assert saved["environment"]["packages"] == {"vllm": "0.24.0"}
    assert saved["environment"]["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"
    assert saved["commands"]["vllm"][-2:] == ["--port", "<free port>"]
    assert len(saved["runs"]) == 8
    assert (tmp_path / "out" / "gpu_ab.md").read_text() == report["markdown"]


def test_a_failed_warm_up_stops_the_server_and_measures_nothing(tmp_path: Path, fake_world: dict) -> None:
    fake_world["warmup_completed"] = 10
    with pytest.raises(RuntimeError, match="warm-up requests failed"):
        gpu_ab.run(_args(tmp_path), FakeEnergy(), {"vllm": "0.24.0"})
    assert fake_world["events"] == [
        ("start", "wattserve", "PCI_BUS_ID"),
        ("client", "wattserve", 64, 0),
        ("stop",),
    ]


@pytest.mark.parametrize(("passed", "code"), [(True, 0), (False, 1)])
def test_main_exits_1_when_a_criterion_fails(
    passed: bool,
    code: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    energy = FakeEnergy()
    monkeypatch.setattr(gpu_ab.GpuEnergy, "open", classmethod(lambda cls, selection: energy))
    monkeypatch.setattr(gpu_ab, "_versions", lambda python: {"vllm_found": True, "vllm": "0.24.0"})
    monkeypatch.setattr(gpu_ab, "run", lambda *_: {"pass": passed, "markdown": "the tables\n"})

    assert gpu_ab.main(["--out", str(tmp_path)]) == code
    assert capsys.readouterr().out == "the tables\n"
    assert energy.closed


def test_main_refuses_when_the_servers_python_has_no_vllm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(gpu_ab.GpuEnergy, "open", classmethod(lambda cls, selection: FakeEnergy()))
    monkeypatch.setattr(gpu_ab, "_versions", lambda python: {"vllm_found": False, "vllm": None})
    monkeypatch.setattr(gpu_ab, "run", lambda *_: pytest.fail("ran without vLLM"))

    assert gpu_ab.main(["--out", str(tmp_path)]) == 2
    assert "cannot find vLLM" in capsys.readouterr().err
