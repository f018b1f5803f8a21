"""Command lines and environment of the GPU A/B benchmark's two servers and of vLLM's benchmark client."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from benchmarks.gpu_ab_report import SERVERS

__all__ = [
    "FIRST_RUN_SEED",
    "WARMUP_SEED",
    "client_args",
    "engine_flags",
    "num_prompts",
    "server_commands",
    "server_env",
    "server_order",
    "warmup_prompts",
]

# Seeds of the random prompts. Every server and round gets the same prompts at a concurrency, and the
# warm-up and each concurrency get different ones, so no run finds its prompts in the prefix cache.
WARMUP_SEED = 0
FIRST_RUN_SEED = 1


def engine_flags(args: argparse.Namespace, model_dir: Path) -> list[str]:
    """The engine flags both servers get, identically."""
    return [
        "--model",
        str(model_dir),
        "--served-model-name",
        args.served_model_name,
        "--load-format",
        args.load_format,
        "--dtype",
        args.dtype,
        "--max-model-len",
        str(args.max_model_len),
        "--gpu-memory-utilization",
        str(args.gpu_memory_utilization),
        "--seed",
        "0",
        *shlex.split(args.engine_args),
    ]


def server_commands(
    python: str, engine: Sequence[str], wattserve_args: Sequence[str] = (), vllm_args: Sequence[str] = ()
) -> dict[str, list[str]]:
    """Each server's command line (without `--port`): its entry point, the shared engine flags, its own flags.

    vLLM's server is started as a module: the `vllm` console script is not always usable (a wheel
    unpacked onto PYTHONPATH has none).
    """
    http = ["--host", "127.0.0.1"]
    return {
        "wattserve": [python, "-m", "server", "serve", *engine, *http, *wattserve_args],
        "vllm": [python, "-m", "vllm.entrypoints.openai.api_server", *engine, *http, *vllm_args],
    }


def server_env(environ: Mapping[str, str], gpus: str | None) -> dict[str, str]:
    """The servers' environment: ours, with CUDA numbering GPUs as NVML does, limited to `gpus` if given."""
    env = dict(environ)
    # NVML numbers GPUs in PCI bus order; CUDA's default puts the fastest first. The metered GPUs must be
    # the ones the servers use.
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    return env


def server_order(rounds: int) -> list[tuple[str, ...]]:
    """Which server runs first in each round: wattserve, then vLLM, alternating, so order effects cancel."""
    return [SERVERS if index % 2 == 0 else SERVERS[::-1] for index in range(rounds)]


def num_prompts(concurrency: int, args: argparse.Namespace) -> int:
    """Requests in a measured run: enough waves at this concurrency that start and end are a small part."""
    return max(args.min_prompts, args.prompts_per_stream * concurrency)


def warmup_prompts(args: argparse.Namespace) -> int:
    """Requests in the untimed warm-up, sent at the largest concurrency: one wave unless set."""
    return args.warmup_prompts or max(args.concurrency)


def client_args(
    args: argparse.Namespace,
    *,
    url: str,
    model_dir: Path,
    concurrency: int,
    prompts: int,
    seed: int,
    result_path: Path,
) -> list[str]:
    """The benchmark client's flags for one run: random prompts, chat endpoint, streamed, fixed lengths."""
    return [
        "--backend",
        "openai-chat",
        "--endpoint",
        "/v1/chat/completions",
        "--base-url",
        url,
        "--model",
        args.served_model_name,
        "--tokenizer",
        str(model_dir),
        "--dataset-name",
        "random",
        "--random-input-len",
        str(args.input_len),
        "--random-output-len",
        str(args.output_len),
        "--num-prompts",
        str(prompts),
        "--max-concurrency",
        str(concurrency),
        "--request-rate",
        "inf",
        "--ignore-eos",
        "--seed",
        str(seed),
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "50,99",
        # The server is known healthy and warmed up: no single-request test inside the measured window.
        "--ready-check-timeout-sec",
        "0",
        "--disable-tqdm",
        "--save-result",
        "--result-dir",
        str(result_path.parent),
        "--result-filename",
        result_path.name,
    ]
