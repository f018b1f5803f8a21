"""The harness's own capacity: streamed requests per second against the bundled stub server.

The stub answers instantly, so what limits the run is the harness (and the machine it shares with the
stub). A point that keeps its schedule (lag p99 under 10 ms) at the target rate shows the harness is not
the bottleneck of real runs below that rate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from loadtest.config import RunConfig
from loadtest.processes import start_server, stop_server
from loadtest.results import RunResult
from loadtest.runner import run_sync
from loadtest.workload import WorkloadConfig


def calibration_config(url: str, rate: float, tokens: int, duration_s: float) -> RunConfig:
    """One constant-rate open-loop point of short chats against the stub."""
    workload = WorkloadConfig(
        source="synthetic", api="chat", input_len="16", output_len=str(tokens), models="stub"
    )
    return RunConfig(
        url=url,
        workload=workload,
        mode="open",
        arrival="constant",
        rates=[rate],
        duration_s=duration_s,
        warmup_s=2.0,
        cooldown_s=1.0,
        idle_s=0.0,
    )


def calibration_out(args: argparse.Namespace) -> Path:
    """The report folder of a calibration (`--out`, else `loadtest-results/calibration`), created."""
    out = args.out or Path("loadtest-results") / "calibration"
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_calibration(args: argparse.Namespace, out: Path, console: Console) -> RunResult:
    """Start the stub (its log in `out`), run the point against it, and stop it."""
    stub = [sys.executable, "-m", "loadtest.stub_server", "--itl-ms", str(args.stub_itl_ms)]
    process, url = start_server(stub, out / "stub.log")
    try:
        return run_sync(calibration_config(url, args.rate, args.tokens, args.duration), console)
    finally:
        stop_server(process)


def report_verdict(result: RunResult, args: argparse.Namespace, console: Console) -> int:
    """Print the point's throughput, schedule lag and verdict; 1 if the verdict is "fail", else 0."""
    point = result.points[0]
    lag_ms = (point.schedule_lag_s.p99 or 0.0) * 1000
    console.print(
        f"calibration: {point.request_throughput:.1f} req/s answered of {args.rate:g} offered, "
        f"{args.tokens} tokens each; schedule lag p99 {lag_ms:.2f} ms; "
        f"client CPU {point.client_cpu_fraction:.2f} cores; errors {sum(point.errors.values())}; "
        f"verdict {point.validity.verdict}"
    )
    return 0 if point.validity.verdict != "fail" else 1
