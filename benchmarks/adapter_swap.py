"""Benchmark: adapter hot-swap cost, on a wattserve started here with the embedded model.

Measures (1) the time from `POST /v1/adapters` (a replacement) to the first token served by the new
version, and (2) the p99 inter-token latency of other streams during replacements against the same load
without them.

    python -m benchmarks.adapter_swap [--seconds 20] [--streams 6] [--swap-every 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

from loadtest.aggregate import distribution
from loadtest.processes import start_server, stop_server

ADMIN_KEY = "bench-admin"
PROMPT = "The sea was calm and"


def _gaps_ms(gaps_s: list[float]) -> dict:
    gaps_ms = distribution([1000 * gap for gap in gaps_s])
    return {"p50": gaps_ms.p50, "p99": gaps_ms.p99, "gaps": gaps_ms.count}


async def stream_gaps(http: httpx.AsyncClient, model: str, max_tokens: int) -> tuple[list[float], float, str]:
    """Stream one completion; return the gaps between content chunks, the first-token time and the version."""
    body = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "stream": True, "ignore_eos": True}
    gaps, first, last = [], float("nan"), None
    async with http.stream("POST", "/v1/completions", json=body) as response:
        version = response.headers.get("x-adapter-version", "")
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            now = time.perf_counter()
            if last is None:
                first = now
            else:
                gaps.append(now - last)
            last = now
    return gaps, first, version


async def background(http: httpx.AsyncClient, models: list[str], streams: int, stop_at: float) -> list[float]:
    """Keep `streams` streams running until `stop_at`; return every inter-token gap."""
    gaps: list[float] = []
    cycle = itertools.cycle(models)

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            gaps.extend((await stream_gaps(http, next(cycle), 64))[0])

    await asyncio.gather(*(worker() for _ in range(streams)))
    return gaps


async def swaps(
    http: httpx.AsyncClient, admin: dict, paths: list[str], every_s: float, stop_at: float
) -> list[float]:
    """Replace adapter `swap` repeatedly; return POST-to-first-new-token times."""
    times: list[float] = []
    for path in itertools.cycle(paths):
        if time.perf_counter() > stop_at:
            break
        started = time.perf_counter()
        response = await http.post("/v1/adapters", json={"name": "swap", "path": path}, headers=admin)
        version = f"swap@{response.json()['version']}"
        _, first, served = await stream_gaps(http, "swap", 1)
        assert served == version, (served, version)
        times.append(first - started)
        await asyncio.sleep(every_s)
    return times


async def measure(url: str, args: argparse.Namespace) -> dict:
    """Run the two phases against a started server."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=url, timeout=120, headers=admin) as http:
        catalogue = (await http.get("/v1/adapters")).json()["data"]
        paths = [entry["path"] for entry in catalogue if entry["name"].startswith("demo-")]
        await http.post("/v1/adapters", json={"name": "swap", "path": paths[0]})
        base = (await http.get("/v1/models")).json()["data"][0]["id"]
        models = [base, "demo-alpha", "demo-beta"]
        quiet = await background(http, models, args.streams, time.perf_counter() + args.seconds)
        stop_at = time.perf_counter() + args.seconds
        busy, swap_times = await asyncio.gather(
            background(http, models, args.streams, stop_at),
            swaps(http, admin, paths, args.swap_every, stop_at),
        )
    return {
        "swap_to_first_token_ms": {
            "count": len(swap_times),
            "p50": 1000 * statistics.median(swap_times),
            "max": 1000 * max(swap_times),
        },
        "itl_ms_without_swaps": _gaps_ms(quiet),
        "itl_ms_during_swaps": _gaps_ms(busy),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--streams", type=int, default=6)
    parser.add_argument("--swap-every", type=float, default=2.0)
    parser.add_argument("--out", default="bench-results/adapter-swap")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "server", "serve", "--admin-key", ADMIN_KEY, "--max-num-seqs", "32"]
    process, url = start_server(command, out / "server.log")
    try:
        report = asyncio.run(measure(url, args))
    finally:
        stop_server(process)
    report["settings"] = vars(args)
    (out / "adapter_swap.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
