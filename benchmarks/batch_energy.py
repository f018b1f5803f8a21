"""Benchmark: a batch's joules per token against the same work served live, and its cost to live traffic.

It starts the real wattserve on its embedded model, a fresh server for each run (never two at once), and
drives it with the harness (`python -m loadtest run`, a separate process) and the Batch API:

1. The same work. N chat requests (seeded prompts, a fixed output length, `ignore_eos`):
   a. live: the default tier, open-loop Poisson arrivals at `--rate`, a rate that leaves the engine
      partly idle; the harness's duration is chosen so that its schedule holds exactly N arrivals;
   b. batch: the very same requests as one batch input file: upload, create, poll until completed.
   Per run: `/v1/energy` before and after (metered joules, idle joules, busy share), each request's
   `usage.energy`, the batch object's `energy`, wall time.
2. Live traffic beside a large batch. The default tier's open-loop Poisson stream (`--rate`,
   `--duration`, the same seed) alone, then with a batch of enough lines to outlast it, created before
   the stream starts and cancelled once it ends: the default tier's TTFT p90 with the batch over its
   figure alone (target at most 1.10), and what the batch answered meanwhile.

    python -m benchmarks.batch_energy [--requests 200] [--rate 3] [--duration 90] [--rounds 1] [--out DIR]

With `--rounds K` the second measurement runs K times (alone, then with the batch, in each round) and its
verdict is on the median ratio; `--beside-only` (with `--batch-lines`) skips the first.

Reports: `batch_energy.json` and `batch_energy.md` in `--out`, each run's harness files and server log in
a folder beside them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import shlex
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil

from benchmarks.batch_energy_report import (
    BATCH_ENDPOINT,
    batch_input,
    batch_progress,
    batch_run,
    beside_batch,
    beside_rounds,
    live_run,
    markdown,
    metered,
    on_schedule,
    same_work,
    schedule_duration,
    steal_share,
    workload,
)
from benchmarks.energy_policy import (
    DRAIN_S,
    ENGINE_FLAGS,
    SETTLE_S,
    _cpu_seconds,
    _energy,
    _Formatter,
    _machine,
    cpu_cores,
    drive,
)
from benchmarks.energy_policy_report import run_figures
from loadtest.processes import start_server, stop_server
from loadtest.reports import read_json
from loadtest.workload import build_requests

FINISHED = ("completed", "failed", "expired", "cancelled")
POLL_S = 0.5  # how often a batch's status is read while it runs
SAMPLE_S = 5.0  # how often the batch's progress is sampled beside the live stream
BATCH_TIMEOUT_S = 3600.0
MAX_BATCH_LINES = 50_000  # the server's default --max-batch-lines
OUTLAST_FACTOR = 2.0  # the large batch holds this many times the lines it would answer alone meanwhile
OUTLAST_MARGIN_S = 30.0  # ... over the stream's duration plus this much


def build_parser() -> argparse.ArgumentParser:
    """The command line; every default is shown by --help."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.batch_energy", description=__doc__, formatter_class=_Formatter
    )
    load = parser.add_argument_group("load")
    load.add_argument("--requests", type=int, default=200, help="requests of the same-work runs")
    load.add_argument("--rate", type=float, default=3.0, help="requests/s of the live streams, Poisson")
    load.add_argument(
        "--duration", type=float, default=90.0, help="seconds of the live stream beside a batch"
    )
    load.add_argument("--warmup", type=float, default=10.0, help="first seconds of that stream left out")
    load.add_argument("--cooldown", type=float, default=5.0, help="last seconds of that stream left out")
    load.add_argument("--seed", type=int, default=0, help="seed of the schedules and prompts")
    load.add_argument("--input-len", type=int, default=64, help="prompt length (words)")
    load.add_argument("--output-len", type=int, default=64, help="output tokens (ignore_eos)")
    load.add_argument(
        "--batch-lines",
        type=int,
        default=0,
        help="lines of the batch beside the stream (default: 0, enough to outlast it, from the batch's "
        "own rate in the same-work run)",
    )
    load.add_argument(
        "--rounds", type=int, default=1, help="rounds of the stream alone and beside the batch (median ratio)"
    )
    load.add_argument(
        "--beside-only",
        action="store_true",
        help="only the stream beside a batch (needs --batch-lines: the same-work run sizes it otherwise)",
    )
    server = parser.add_argument_group("server")
    server.add_argument("--max-num-seqs", type=int, default=32, help="the engine's batch")
    server.add_argument("--energy-meter", default="estimated", help="wattserve's --energy-meter")
    server.add_argument(
        "--server-flags", default="", help="more wattserve flags for every run (default: none)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results/batch-energy"), help="report folder")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parsed and checked arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.warmup + args.cooldown >= args.duration:
        parser.error("--warmup plus --cooldown must be shorter than --duration")
    if args.rate <= 0 or args.requests < 1 or args.batch_lines < 0 or args.rounds < 1:
        parser.error("--rate, --requests and --rounds must be positive, --batch-lines at least 0")
    if args.beside_only and not args.batch_lines:
        parser.error("--beside-only needs --batch-lines")
    return args


def server_command(args: argparse.Namespace, batch_store: str) -> list[str]:
    """The wattserve command line of every run (`start_server` adds the port)."""
    return [
        sys.executable, "-m", "server", "serve", *ENGINE_FLAGS,
        "--max-num-seqs", str(args.max_num_seqs), "--energy-meter", args.energy_meter,
        "--batch-store", batch_store, *shlex.split(args.server_flags),
    ]  # fmt: skip


def harness_command(
    url: str, model: str, args: argparse.Namespace, out: Path, *, duration: float, edges: tuple[float, float]
) -> list[str]:
    """The harness's command line: one open-loop point of default-tier chat requests."""
    return [
        sys.executable, "-m", "loadtest", "run", "--url", url, "--api", "chat", "--model", model,
        "--rate", f"{args.rate:g}", "--arrival", "poisson", "--duration", f"{duration:g}",
        "--warmup", f"{edges[0]:g}", "--cooldown", f"{edges[1]:g}", "--seed", str(args.seed),
        "--input-len", str(args.input_len), "--output-len", str(args.output_len), "--ignore-eos",
        "--service-tier", "default", "--idle", "0", "--per-request", "--out", str(out),
    ]  # fmt: skip


@contextlib.contextmanager
def serving(args: argparse.Namespace, out: Path) -> Iterator[tuple[int, str, httpx.Client]]:
    """A fresh server with a throwaway batch store, settled; its pid, URL and a client; stopped after."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="batch-energy-") as store:
        process, url = start_server(
            server_command(args, f"sqlite:///{store}/batches.sqlite3"), out / "server.log"
        )
        try:
            time.sleep(SETTLE_S)
            with httpx.Client(base_url=url, timeout=120) as client:
                yield process.pid, url, client
        finally:
            stop_server(process)


def served_model(client: httpx.Client) -> str:
    """The first model the server lists (the harness's default too)."""
    return client.get("/v1/models").raise_for_status().json()["data"][0]["id"]


def submit(client: httpx.Client, content: bytes) -> dict:
    """Upload a batch input file and create its batch; the batch object."""
    upload = client.post(
        "/v1/files", files={"file": ("input.jsonl", content, "application/jsonl")}, data={"purpose": "batch"}
    ).raise_for_status()
    body = {"input_file_id": upload.json()["id"], "endpoint": BATCH_ENDPOINT, "completion_window": "24h"}
    batch = client.post("/v1/batches", json=body).raise_for_status().json()
    if batch["status"] == "failed":
        raise RuntimeError(f"the server refused the batch input: {batch['errors']}")
    return batch


def wait_for(client: httpx.Client, batch_id: str, done: Callable[[dict], bool], timeout_s: float) -> dict:
    """Poll a batch until `done(batch)`; the batch object then."""
    deadline = time.monotonic() + timeout_s
    while not done(batch := client.get(f"/v1/batches/{batch_id}").raise_for_status().json()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} still {batch['status']} after {timeout_s:g} s")
        time.sleep(POLL_S)
    return batch


def output_lines(client: httpx.Client, batch: dict) -> list[dict]:
    """The lines of a finished batch's output file."""
    if not batch.get("output_file_id"):
        return []
    text = client.get(f"/v1/files/{batch['output_file_id']}/content").raise_for_status().text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _sample(url: str, batch_id: str, stop: threading.Event, samples: list[tuple[float, int]]) -> None:
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=30) as client:
        while True:
            counts = client.get(f"/v1/batches/{batch_id}").json()["request_counts"]
            samples.append((round(time.monotonic() - started, 2), counts["completed"]))
            if stop.wait(SAMPLE_S):
                return


def _load_average() -> float:
    return os.getloadavg()[0]


def same_work_runs(args: argparse.Namespace) -> dict:
    """The same requests live (the harness) and as one batch, each on a fresh server."""
    duration = schedule_duration(args.rate, args.requests, args.seed)
    out = args.out / "same-work-live"
    load = _load_average()
    with serving(args, out) as (pid, url, client):
        model = served_model(client)
        command = harness_command(url, model, args, out, duration=duration, edges=(0.0, 0.0))
        started = time.monotonic()
        before, after, cores = drive(url, pid, command, out)
        wall = time.monotonic() - started
    live = live_run(read_json(out / "result.json"), metered(before, after, wall, cores))
    live |= {"load_average": load, "harness_command": shlex.join(["python", *command[1:]])}
    specs = build_requests(workload(model, args.input_len, args.output_len), args.requests, args.seed)
    out = args.out / "same-work-batch"
    load = _load_average()
    with serving(args, out) as (pid, url, client):
        if served_model(client) != model:
            raise RuntimeError("the two servers serve different models")
        before, cpu, started = _energy(url), _cpu_seconds(pid), time.monotonic()
        batch = submit(client, batch_input(specs))
        batch = wait_for(client, batch["id"], lambda b: b["status"] in FINISHED, BATCH_TIMEOUT_S)
        time.sleep(DRAIN_S)  # as after the harness: the ledger closes its last intervals
        wall = time.monotonic() - started
        cores, after = cpu_cores(cpu, _cpu_seconds(pid), wall), _energy(url)
        lines = output_lines(client, batch)
    (out / "batch.json").write_text(json.dumps(batch, indent=2))
    return same_work(
        live, batch_run(batch, lines, metered(before, after, wall, cores)) | {"load_average": load}, duration
    )


def outlasting_lines(args: argparse.Namespace, work: dict | None) -> int:
    """Lines enough for a batch to run through the whole live stream (`--batch-lines` when set)."""
    if args.batch_lines:
        return int(args.batch_lines)
    assert work is not None  # parse_args: --beside-only needs --batch-lines
    batch = work["batch"]
    lines_per_s = batch["answered"] / max(batch["work_s"] or batch["wall_s"], 1.0)
    wanted = math.ceil(OUTLAST_FACTOR * lines_per_s * (args.duration + OUTLAST_MARGIN_S))
    return min(MAX_BATCH_LINES, max(args.requests, wanted))


def drive_watching_the_host(
    url: str, pid: int, command: list[str], out: Path
) -> tuple[dict, dict, dict, float | None]:
    """`drive`, and the share of the machine's CPU time its host took (steal) meanwhile."""
    host = psutil.cpu_times()
    before, after, cores = drive(url, pid, command, out)
    return before, after, cores, steal_share(host, psutil.cpu_times())


def beside_batch_runs(args: argparse.Namespace, lines: int, number: int) -> dict:
    """Round `number`: the live stream alone, then beside a batch of `lines` lines, each on a fresh server."""
    edges = (args.warmup, args.cooldown)
    runs = {}
    for name in ("alone", "with_batch"):
        out = args.out / (name.replace("_", "-") + ("" if number == 1 else f"-{number}"))
        load = _load_average()
        with serving(args, out) as (pid, url, client):
            model = served_model(client)
            command = harness_command(url, model, args, out, duration=args.duration, edges=edges)
            if name == "alone":
                before, after, cores, steal = drive_watching_the_host(url, pid, command, out)
            else:
                # Other prompts than the stream's (seed + 1), so neither reuses the other's prefix cache.
                specs = build_requests(workload(model, args.input_len, args.output_len), lines, args.seed + 1)
                batch = submit(client, batch_input(specs))
                running = wait_for(
                    client, batch["id"], lambda b: b["request_counts"]["completed"] > 0, BATCH_TIMEOUT_S
                )
                stop, samples = threading.Event(), []
                sampler = threading.Thread(target=_sample, args=(url, batch["id"], stop, samples))
                sampler.start()
                started = time.monotonic()
                try:
                    before, after, cores, steal = drive_watching_the_host(url, pid, command, out)
                finally:
                    stop.set()
                    sampler.join()
                seconds = time.monotonic() - started
                at_end = client.get(f"/v1/batches/{batch['id']}").raise_for_status().json()
                if at_end["status"] not in FINISHED:  # the rest is not measured: let it go
                    client.post(f"/v1/batches/{batch['id']}/cancel").raise_for_status()
                    wait_for(client, batch["id"], lambda b: b["status"] in FINISHED, BATCH_TIMEOUT_S)
                progress = batch_progress(running, at_end, seconds, samples)
        result = read_json(out / "result.json")
        figures = run_figures(result, before, after, cores) | {
            "on_schedule": on_schedule(result),
            "host_steal_share": steal,
        }
        runs[name] = figures | {"load_average": load, "harness_command": shlex.join(["python", *command[1:]])}
    return beside_batch(runs["alone"], runs["with_batch"], progress)


def settings(args: argparse.Namespace) -> dict:
    """The settings of the runs, for the report."""
    return {
        "requests": args.requests,
        "rate": args.rate,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "cooldown_s": args.cooldown,
        "seed": args.seed,
        "input_len": args.input_len,
        "output_len": args.output_len,
        "max_num_seqs": args.max_num_seqs,
        "energy_meter": args.energy_meter,
        "server_flags": args.server_flags,
        "sample_s": SAMPLE_S,
        "rounds": args.rounds,
    }


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    """Both measurements in turn; writes `batch_energy.json` and `batch_energy.md`."""
    args.out.mkdir(parents=True, exist_ok=True)
    load, started = _load_average(), time.monotonic()
    work = None
    if not args.beside_only:
        work = same_work_runs(args)
        print(f"same work: done in {time.monotonic() - started:.0f} s", flush=True)  # noqa: T201
    lines = outlasting_lines(args, work)
    rounds = []
    for number in range(1, args.rounds + 1):
        rounds.append(beside_batch_runs(args, lines, number))
        elapsed = time.monotonic() - started
        print(f"beside a batch of {lines} lines, round {number}: done in {elapsed:.0f} s", flush=True)  # noqa: T201
    beside = beside_rounds(rounds)
    report = {
        "command": shlex.join(["python", "-m", "benchmarks.batch_energy", *argv]),
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": _machine(),
        "load_average_at_start": load,
        "settings": settings(args),
        "server_command": shlex.join(["python", *server_command(args, "sqlite:///<temporary>")[1:]]),
        "same_work": work,
        "beside_batch": beside,
    }
    (args.out / "batch_energy.json").write_text(json.dumps(report, indent=2))
    (args.out / "batch_energy.md").write_text(markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints the two verdicts (it reports either way, and exits 0)."""
    argv = sys.argv[1:] if argv is None else argv
    # A SIGTERM (a `timeout`, a CI cancel) unwinds like Ctrl-C, so the running server is stopped too:
    # it leads its own process group and would outlive this process otherwise.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = run(parse_args(argv), argv)
    work, beside = report["same_work"], report["beside_batch"]
    if work:
        print(f"batch / live J/token: metered {work['metered_ratio']}, usage {work['usage_ratio']}")  # noqa: T201
    print(  # noqa: T201
        f"TTFT p90 beside the batch / alone, median of the rounds: {beside['ttft_ratio']}; "
        f"over the requests sent on schedule: {beside['ttft_ratio_on_schedule']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
