"""Benchmark: CPU seconds the API-server process spends per streamed output token, wattserve vs vLLM.

Both servers run the same model with the same engine flags, one at a time, alternating over `--rounds`.
Each round holds `--concurrency` streams open (closed loop) until `--requests` have finished, every
stream asking for `--output-len` tokens with `ignore_eos`. The figure is the API-server process's own
CPU time (user + system, all its threads; the engine-core process is a child and is not counted) over
the output tokens the server reported in `usage`, so it measures the frontend and not the engine.

    python -m benchmarks.frontend_cost [--rounds 3] [--concurrency 64] [--requests 256]
                                       [--output-len 256] [--api chat|completions] [--out DIR]

The client is deliberately minimal (it keeps only the last event of each stream) and runs in this
process, so the servers never share a core with a heavier load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import psutil

from benchmarks.overhead import ENGINE_FLAGS, SERVED_NAME, embedded_model_path
from loadtest.processes import start_server, stop_server

PROMPT = "Write a long story about a lighthouse keeper and the sea."


@dataclass
class RoundResult:
    """One server's figures for one round."""

    server: str
    api_cpu_s: float
    engine_cpu_s: float
    output_tokens: int
    wall_s: float
    failed: int

    @property
    def api_cpu_us_per_token(self) -> float:
        """API-process CPU microseconds per output token."""
        return self.api_cpu_s / self.output_tokens * 1e6 if self.output_tokens else float("nan")


def _body(api: str, output_len: int) -> dict:
    common = {
        "model": SERVED_NAME,
        "max_tokens": output_len,
        "ignore_eos": True,
        "temperature": 0.8,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if api == "chat":
        return {**common, "messages": [{"role": "user", "content": PROMPT}]}
    return {**common, "prompt": PROMPT}


async def _stream(session: aiohttp.ClientSession, url: str, body: dict) -> int:
    """Read one stream to its end; return the output tokens its usage chunk reports (0 on failure)."""
    async with session.post(url, json=body) as response:
        if response.status != 200:
            await response.read()
            return 0
        last_event = b""
        async for line in response.content:
            if line.startswith(b"data: {"):
                last_event = line
    usage = json.loads(last_event[6:]).get("usage") or {}
    return int(usage.get("completion_tokens") or 0)


async def _load(base_url: str, args: argparse.Namespace) -> tuple[int, int]:
    path = "/v1/chat/completions" if args.api == "chat" else "/v1/completions"
    body = _body(args.api, args.output_len)
    remaining = args.requests
    tokens = failed = 0
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal remaining, tokens, failed
            while remaining > 0:
                remaining -= 1
                got = await _stream(session, path, body)
                tokens += got
                failed += got == 0

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return tokens, failed


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _children_cpu_s(process: psutil.Process) -> float:
    total = 0.0
    for child in process.children(recursive=True):
        try:
            total += _cpu_s(child)
        except psutil.NoSuchProcess:
            continue
    return total


def measure(name: str, url: str, pid: int, args: argparse.Namespace) -> RoundResult:
    """Warm the server up with one untimed batch, then time one closed-loop batch."""
    warmup = argparse.Namespace(**{**vars(args), "requests": args.concurrency})
    asyncio.run(_load(url, warmup))
    server = psutil.Process(pid)
    api_before, engine_before, started = _cpu_s(server), _children_cpu_s(server), time.perf_counter()
    tokens, failed = asyncio.run(_load(url, args))
    wall_s = time.perf_counter() - started
    return RoundResult(
        server=name,
        api_cpu_s=_cpu_s(server) - api_before,
        engine_cpu_s=_children_cpu_s(server) - engine_before,
        output_tokens=tokens,
        wall_s=wall_s,
        failed=failed,
    )


def server_commands(model: str, energy_meter: str) -> dict[str, list[str]]:
    """Both servers' command lines, on the same model, served name and engine flags."""
    named = ["--model", model, "--served-model-name", SERVED_NAME, *ENGINE_FLAGS]
    return {
        "wattserve": [sys.executable, "-m", "server", "serve", *named, "--energy-meter", energy_meter],
        "vllm": [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *named],
    }


def run(args: argparse.Namespace) -> dict:
    """Run every round, alternating which server goes first, and write the report."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    commands = server_commands(embedded_model_path(), args.energy_meter)
    rounds: list[RoundResult] = []
    for round_index in range(args.rounds):
        order = list(commands) if round_index % 2 == 0 else list(reversed(commands))
        for name in order:
            process, url = start_server(commands[name], out / f"{name}-{round_index}.log")
            try:
                result = measure(name, url, process.pid, args)
            finally:
                stop_server(process)
            rounds.append(result)
            print(  # noqa: T201
                f"round {round_index} {name}: {result.api_cpu_us_per_token:.1f} us/token API CPU, "
                f"{result.output_tokens / result.wall_s:.0f} tok/s, {result.failed} failed",
                flush=True,
            )

    def median_us(name: str) -> float:
        return statistics.median(r.api_cpu_us_per_token for r in rounds if r.server == name)

    ratio = median_us("wattserve") / median_us("vllm")
    report = {
        "workload": {
            "api": args.api,
            "concurrency": args.concurrency,
            "requests": args.requests,
            "output_len": args.output_len,
            "ignore_eos": True,
            "rounds": args.rounds,
        },
        "engine_flags": ENGINE_FLAGS,
        "energy_meter": args.energy_meter,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "rounds": [asdict(r) | {"api_cpu_us_per_token": r.api_cpu_us_per_token} for r in rounds],
        "median_api_cpu_us_per_token": {"wattserve": median_us("wattserve"), "vllm": median_us("vllm")},
        "ratio": ratio,
        "target_max_ratio": args.target,
        "pass": ratio <= args.target,
    }
    (out / "frontend_cost.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=256, help="Streams per timed batch.")
    parser.add_argument("--output-len", type=int, default=256)
    parser.add_argument("--api", choices=["chat", "completions"], default="chat")
    parser.add_argument("--energy-meter", default="auto", help="wattserve's meter (metering stays on).")
    parser.add_argument("--target", type=float, default=0.7, help="Pass when wattserve/vLLM is at most this.")
    parser.add_argument("--out", default="bench-results/frontend-cost")
    report = run(parser.parse_args(argv))
    print(json.dumps({k: report[k] for k in ("median_api_cpu_us_per_token", "ratio", "pass")}))  # noqa: T201
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
