"""`wattserve-bench` end to end against the bundled stub server: sweeps, closed loops, errors, calibration."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.processes import start_server, stop_server

BENCH = [sys.executable, "-m", "loadtest"]


@pytest.fixture(scope="module")
def stub_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The stub, pacing its 16 tokens 1 ms apart so each arrives in its own read."""
    log = tmp_path_factory.mktemp("stub") / "stub.log"
    process, url = start_server([sys.executable, "-m", "loadtest.stub_server", "--itl-ms", "1"], log)
    yield url
    stop_server(process)


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*BENCH, *args], capture_output=True, text=True, timeout=120, check=False)


def test_open_loop_sweep_reconciles_tokens_with_the_stub_counters(stub_url: str, tmp_path: Path) -> None:
    finished = _bench(
        "run", "--url", stub_url, "--rate", "20,40", "--arrival", "gamma", "--burstiness", "0.5",
        "--duration", "3", "--warmup", "0.5", "--cooldown", "0.5", "--idle", "0", "--model", "a=1,b=1",
        "--output-len", "16",
        "--per-request", "--out", str(tmp_path),
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert [point["load"]["rate"] for point in result["points"]] == [20.0, 40.0]
    for point in result["points"]:
        records = [r for r in result["requests"] if r["point"] == point["index"]]
        assert point["tokens"]["client_completion"] == 16 * len(records)
        assert point["tokens"]["server_completion"] == 16 * len(records)
        assert point["tokens"]["match"] is True
        assert point["energy"] is None  # the stub exposes no energy metrics
        assert {a["model"] for a in point["adapters"]} == {"a", "b"}
        assert all(len(r["itl_s"]) == 15 for r in records)
    assert (tmp_path / "report.html").stat().st_size > 0
    assert "no energy" in (tmp_path / "report.html").read_text().lower()


def test_closed_loop_keeps_its_concurrency(stub_url: str, tmp_path: Path) -> None:
    finished = _bench(
        "run", "--url", stub_url, "--concurrency", "1,4", "--duration", "2", "--warmup", "0.5",
        "--cooldown", "0.5", "--idle", "0", "--no-stop-at-saturation", "--per-request",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert [point["load"]["concurrency"] for point in result["points"]] == [1, 4]
    for point in result["points"]:
        records = sorted(
            (r for r in result["requests"] if r["point"] == point["index"]), key=lambda r: r["index"]
        )
        assert [r["index"] for r in records] == list(range(len(records)))
        assert all(r["error"] is None for r in records)
        # At no instant are more requests in flight than the loop's concurrency.
        events = sorted([(r["sent_at_s"], 1) for r in records] + [(r["end_at_s"], -1) for r in records])
        in_flight = peak = 0
        for _, change in events:
            in_flight += change
            peak = max(peak, in_flight)
        assert peak <= point["load"]["concurrency"]


def test_unreachable_target_is_a_clear_error(tmp_path: Path) -> None:
    finished = _bench(
        "run", "--url", "http://127.0.0.1:9", "--model", "x", "--rate", "1", "--out", str(tmp_path)
    )
    assert finished.returncode == 2
    assert "cannot reach http://127.0.0.1:9" in finished.stderr


def test_invalid_configuration_is_refused_before_any_load(stub_url: str, tmp_path: Path) -> None:
    finished = _bench("run", "--url", stub_url, "--rate", "1", "--duration", "2", "--warmup", "2")
    assert finished.returncode == 2
    assert "warm-up plus cool-down must be shorter" in finished.stderr
    assert _bench("run", "--url", stub_url, "--slo", "ttft=1s").returncode == 2


def test_calibration_writes_its_reports(tmp_path: Path) -> None:
    finished = _bench("calibrate", "--rate", "50", "--duration", "4", "--out", str(tmp_path))
    assert "calibration:" in finished.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    (point,) = result["points"]
    assert point["requests"] == 200  # 50/s constant over 4 s
    assert point["load"]["arrival"] == "constant"
    assert {check["name"] for check in point["validity"]["checks"]} >= {"schedule_lag_p99", "client_cpu"}


def test_bad_inputs_are_reported_verbatim_without_a_traceback(tmp_path: Path) -> None:
    finished = _bench("run", "--url", "http://127.0.0.1:9", "--model", "zipf:x:a", "--rate", "1")
    assert finished.returncode == 2
    assert "spec 'zipf:x:a': 'x' is not a number" in finished.stderr
    finished = _bench("compare", str(tmp_path / "missing.json"), str(tmp_path / "missing.json"))
    assert finished.returncode == 2
    assert "cannot read a result file" in finished.stderr
    assert "Traceback" not in finished.stderr
