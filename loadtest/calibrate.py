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


def calibrate(args: argparse.Namespace, console: Console) -> int:
    """Start the stub, run the point, write the reports, and print the verdict."""
    from loadtest.commands import write_reports  # noqa: PLC0415 - that module imports this one lazily

    out = args.out or Path("loadtest-results") / "calibration"
    out.mkdir(parents=True, exist_ok=True)
    stub = [sys.executable, "-m", "loadtest.stub_server", "--itl-ms", str(args.stub_itl_ms)]
    process, url = start_server(stub, out / "stub.log")
    try:
        result = run_sync(calibration_config(url, args.rate, args.tokens, args.duration), console)
    finally:
        stop_server(process)
    write_reports(result, out, console)
    point = result.points[0]
    lag_ms = (point.schedule_lag_s.p99 or 0.0) * 1000
    console.print(
        f"calibration: {point.request_throughput:.1f} req/s answered of {args.rate:g} offered, "
        f"{args.tokens} tokens each; schedule lag p99 {lag_ms:.2f} ms; "
        f"client CPU {point.client_cpu_fraction:.2f} cores; errors {sum(point.errors.values())}; "
        f"verdict {point.validity.verdict}"
    )
    return 0 if point.validity.verdict != "fail" else 1
