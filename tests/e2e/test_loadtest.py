"""`wattserve-bench` against the real server: its reports agree with its records and the server's counters."""

from __future__ import annotations

import base64
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from loadtest.scrape import ATTRIBUTED, GENERATION_TOKENS, PROMPT_TOKENS, parse_metrics
from tests.e2e.conftest import API_KEY, MODEL, Server

pytestmark = pytest.mark.e2e
MIX = f"{MODEL}=2,demo-alpha=1,demo-beta=1"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _counters(server: Server) -> dict[str, float]:
    text = httpx.get(f"{server.base_url}/metrics", timeout=30).text
    return parse_metrics(text, 0.0).totals


@pytest.fixture(scope="module")
def sweep(lora_server: Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict, dict]:
    """A two-point Poisson sweep over the base model and both demo adapters, with per-request records."""
    out = tmp_path_factory.mktemp("sweep")
    before = _counters(lora_server)
    command = [sys.executable, "-m", "loadtest", "run", "--url", lora_server.base_url, "--api-key", API_KEY]
    command += ["--rate", "2,4", "--duration", "8", "--warmup", "1", "--cooldown", "1", "--idle", "1"]
    command += ["--model", MIX, "--input-len", "16", "--output-len", "uniform:8:24", "--ignore-eos"]
    command += ["--slo", "ttft_p90=5s", "--per-request", "--no-stop-at-saturation", "--out", str(out)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert finished.returncode == 0, finished.stderr[-3000:]
    after = _counters(lora_server)
    delta = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}
    return out, json.loads((out / "result.json").read_text()), delta, {"stderr": finished.stderr}


def test_tokens_agree_exactly_with_the_records_and_the_server(sweep: tuple) -> None:
    out, result, delta, _ = sweep
    records = result["requests"]
    assert len(result["points"]) == 2
    assert len(records) == sum(point["requests"] for point in result["points"]) > 10
    assert all(record["error"] is None and record["token_source"] == "usage" for record in records)
    completion = sum(record["completion_tokens"] for record in records)
    prompt = sum(record["prompt_tokens"] for record in records)
    assert completion == sum(point["tokens"]["client_completion"] for point in result["points"])
    assert completion == delta[GENERATION_TOKENS]
    assert prompt == delta[PROMPT_TOKENS]
    for point in result["points"]:
        assert point["tokens"]["match"] is True
        assert {check["name"]: check["status"] for check in point["validity"]["checks"]}[
            "token_reconciliation"
        ] == "pass"
    assert {record["model"] for record in records} == {MODEL, "demo-alpha", "demo-beta"}


def test_energy_agrees_with_the_server_within_one_percent(sweep: tuple) -> None:
    _, result, delta, _ = sweep
    attributed = sum(record["energy_joules"] for record in result["requests"])
    assert attributed == pytest.approx(delta[ATTRIBUTED], rel=0.01)
    assert attributed == pytest.approx(
        sum(p["energy"]["attributed_joules"] for p in result["points"]), rel=1e-9
    )
    for point in result["points"]:
        energy = point["energy"]
        assert energy["source"] == "estimated"
        assert energy["attribution_match"] is True
        assert energy["metered_joules"] > 0
        # On a starved machine a short window may see no token come out: then there is no figure.
        window_tokens = energy["window_output_tokens"]
        expected = energy["metered_joules"] / window_tokens if window_tokens else None
        figure = energy["joules_per_output_token"]
        assert figure == (pytest.approx(expected) if expected is not None else None)
        assert energy["idle_watts"] is not None
    assert result["points"][1]["energy"]["marginal_joules_per_output_token"] is not None


def test_point_figures_are_the_records_aggregated(sweep: tuple) -> None:
    _, result, _, _ = sweep
    for point in result["points"]:
        records = [r for r in result["requests"] if r["point"] == point["index"]]
        measured = [r for r in records if r["phase"] == "measure"]
        assert point["requests"] == len(records)
        assert point["measured"] == len(measured) == point["ok"]
        ttfts = [r["first_token_at_s"] - r["sent_at_s"] for r in measured]
        assert point["ttft_s"]["p50"] == pytest.approx(np.percentile(ttfts, 50))
        assert point["ttft_s"]["p99"] == pytest.approx(np.percentile(ttfts, 99))
        itls = [gap for r in measured for gap in r["itl_s"]]
        assert point["itl_s"]["p90"] == pytest.approx(np.percentile(itls, 90))
        # Offered and answered over the same requests: the window's, answered over the time their
        # answers took to come out, the window itself unless they fell behind.
        span = point["answer_span_s"]
        assert span >= point["window_s"]
        assert point["offered_rps"] == pytest.approx(len(measured) / point["window_s"])
        assert point["request_throughput"] == pytest.approx(len(measured) / span)
        assert point["output_throughput"] == pytest.approx(
            sum(r["completion_tokens"] for r in measured) / span
        )
        assert point["validity"]["saturated"] == (point["request_throughput"] < 0.9 * point["offered_rps"])
        per_model = {a["model"]: a["requests"] for a in point["adapters"]}
        assert sum(per_model.values()) == len(measured)
        for adapter in point["adapters"]:  # per-model energy from the requests' own usage.energy
            mine = [r for r in measured if r["model"] == adapter["model"]]
            joules = sum(r["energy_joules"] for r in mine)
            assert adapter["joules"] == pytest.approx(joules)
            assert adapter["joules_per_output_token"] == pytest.approx(
                joules / sum(r["completion_tokens"] for r in mine)
            )
        for record in records:
            assert record["scheduled_at_s"] <= record["dispatched_at_s"] <= record["sent_at_s"]


def test_csv_rows_equal_the_json_points(sweep: tuple) -> None:
    out, result, _, _ = sweep
    rows = list(csv.DictReader((out / "points.csv").read_text().splitlines()))
    assert len(rows) == len(result["points"])
    for row, point in zip(rows, result["points"], strict=True):
        assert int(row["ok"]) == point["ok"]
        assert float(row["output_throughput"]) == pytest.approx(point["output_throughput"])
        assert float(row["ttft_p99_s"]) == pytest.approx(point["ttft_s"]["p99"])
        assert int(row["server_completion_tokens"]) == point["tokens"]["server_completion"]
        figure = point["energy"]["joules_per_output_token"]
        assert (float(row["joules_per_output_token"]) if row["joules_per_output_token"] else None) == (
            pytest.approx(figure) if figure is not None else None
        )
        assert row["energy_source"] == "estimated"
    breakdown = list(csv.DictReader((out / "breakdown.csv").read_text().splitlines()))
    assert {(int(r["point"]), r["name"]) for r in breakdown if r["group"] == "model"} == {
        (point["index"], adapter["model"]) for point in result["points"] for adapter in point["adapters"]
    }


def test_html_report_embeds_its_plots(sweep: tuple) -> None:
    out, result, _, _ = sweep
    html = (out / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 4
    for image in images:
        data = base64.b64decode(image)
        assert data.startswith(PNG_SIGNATURE)
        assert len(data) > 1000
    for point in result["points"]:
        assert f"{point['load']['rate']:g} req/s poisson" in html
    assert "estimated" in html
    lines = (out / "requests.jsonl").read_text().splitlines()
    assert len(lines) == len(result["requests"])


def test_compare_puts_a_run_beside_itself(sweep: tuple) -> None:
    out, _, _, _ = sweep
    command = [
        sys.executable,
        "-m",
        "loadtest",
        "compare",
        str(out / "result.json"),
        str(out / "result.json"),
    ]
    finished = subprocess.run(
        [*command, "--markdown"], capture_output=True, text=True, timeout=60, check=True
    )
    assert "| req/s |" in finished.stdout
    assert "1.00×" in finished.stdout
