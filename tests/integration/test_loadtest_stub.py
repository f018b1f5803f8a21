"""`wattserve-bench` end to end against the bundled stub server: sweeps, closed loops, errors, calibration."""

from __future__ import annotations

import csv
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


@pytest.fixture(scope="module")
def paced_stub_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The stub paced like a small model: 100 ms to the first token, then 30 ms per token."""
    log = tmp_path_factory.mktemp("paced-stub") / "stub.log"
    command = [sys.executable, "-m", "loadtest.stub_server", "--ttft-ms", "100", "--itl-ms", "30"]
    process, url = start_server(command, log)
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


def test_service_tiers_are_sent_echoed_and_reported(stub_url: str, tmp_path: Path) -> None:
    finished = _bench(
        "run", "--url", stub_url, "--rate", "30", "--duration", "3", "--warmup", "0.5", "--cooldown", "0.5",
        "--idle", "0", "--output-len", "4", "--service-tier", "flex=1,default=1,auto=1", "--per-request",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    records = result["requests"]
    assert {r["service_tier"] for r in records} == {"flex", "default", "auto"}
    # The stub answers as OpenAI does: `auto` is served, and named, as `default`.
    served = {"flex": "flex", "default": "default", "auto": "default"}
    assert all(r["response_service_tier"] == served[r["service_tier"]] for r in records)
    (point,) = result["points"]
    measured = [r for r in records if r["phase"] == "measure"]
    by_tier = {t["service_tier"]: t for t in point["tiers"]}
    assert set(by_tier) == {"flex", "default", "auto"}
    for tier, summary in by_tier.items():
        mine = [r for r in measured if r["service_tier"] == tier]
        assert summary["requests"] == summary["ok"] == len(mine)
        assert summary["response_tiers"] == {served[tier]: len(mine)}
        assert summary["output_tokens"] == 4 * len(mine)
        assert summary["ttft_s"]["count"] == len(mine)
    rows = list(csv.DictReader((tmp_path / "breakdown.csv").read_text().splitlines()))
    tier_rows = {r["name"]: r for r in rows if r["group"] == "service_tier"}
    assert {name: int(r["requests"]) for name, r in tier_rows.items()} == {
        tier: s["requests"] for tier, s in by_tier.items()
    }
    assert "per service tier" in finished.stderr


def test_a_short_sweep_of_a_healthy_server_runs_every_point(paced_stub_url: str, tmp_path: Path) -> None:
    # 15 s points with the default 5 s warm-up and 2 s cool-down, answers about 2 s long: the window's
    # last answers come well after it ends, which once read as saturation and stopped the sweep.
    finished = _bench(
        "run", "--url", paced_stub_url, "--rate", "2,4", "--duration", "15", "--idle", "0",
        "--output-len", "64", "--per-request", "--out", str(tmp_path),
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["stopped_because"] is None
    assert [p["load"]["rate"] for p in result["points"]] == [2.0, 4.0]
    for point in result["points"]:
        measured = [r for r in result["requests"] if r["point"] == point["index"] and r["phase"] == "measure"]
        assert point["ok"] == point["measured"] == len(measured) > 0
        assert max(r["end_at_s"] for r in measured) > 13.0 + 1.0  # answered after the window
        assert point["validity"]["saturated"] is False
        assert point["offered_rps"] == pytest.approx(len(measured) / point["window_s"])


def test_a_saturated_point_is_flagged_and_stops_the_sweep(paced_stub_url: str, tmp_path: Path) -> None:
    # One request at a time, each at least 100 + 7 x 30 ms: at most 3.3 answers a second for 8 offered.
    finished = _bench(
        "run", "--url", paced_stub_url, "--rate", "8,16", "--arrival", "constant", "--max-concurrency", "1",
        "--duration", "5", "--warmup", "1", "--cooldown", "1", "--idle", "0", "--output-len", "8",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    (point,) = result["points"]
    assert "saturated" in result["stopped_because"]
    assert point["validity"]["saturated"] is True
    assert point["offered_rps"] == pytest.approx(8.0)
    assert point["request_throughput"] < 0.5 * point["offered_rps"]
    check = {c["name"]: c for c in point["validity"]["checks"]}["saturation"]
    assert check["status"] == "warn"
    rows = list(csv.DictReader((tmp_path / "points.csv").read_text().splitlines()))
    assert rows[0]["saturated"] == "true"
    assert "saturated" in finished.stderr


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
