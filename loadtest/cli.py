"""`wattserve-bench`: load-test any OpenAI-compatible server; energy figures where it exposes wattserve's.

wattserve-bench run --url URL --rate 2,4,8 [--arrival poisson] ... --out DIR
wattserve-bench run --url URL --concurrency 1,4,16 ...
wattserve-bench compare A/result.json B/result.json [--names A B] [--markdown]
wattserve-bench stub --port 9000             # the bundled stub server, for calibration
wattserve-bench calibrate                    # the harness's own capacity against the stub
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import httpx
from pydantic import ValidationError
from rich.console import Console

from loadtest import reports
from loadtest.config import RunConfig
from loadtest.results import RunResult
from loadtest.runner import TargetError, run_sync
from loadtest.slo import parse_slos
from loadtest.workload import WorkloadConfig


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `run` (and of `calibrate`, which sets the target itself)."""
    target = parser.add_argument_group("target")
    target.add_argument("--url", default="http://127.0.0.1:8000", help="base URL of the server")
    target.add_argument(
        "--api-key", default=os.environ.get("OPENAI_API_KEY"), help="default: $OPENAI_API_KEY"
    )
    target.add_argument("--timeout", type=float, default=600.0, help="per-request timeout, seconds")
    work = parser.add_argument_group("workload")
    work.add_argument("--api", choices=["chat", "completions"], default="chat")
    work.add_argument(
        "--model",
        help="NAME, NAME=W,NAME=W (weighted mix) or zipf:S:NAME,NAME,... (default: the first served model)",
    )
    work.add_argument(
        "--dataset", default="synthetic", help="synthetic, builtin, or a JSONL file of prompts/chats"
    )
    work.add_argument(
        "--input-len", default="64", help="64, uniform:32:128, normal:64:16, hist:32=0.5,128=0.5"
    )
    work.add_argument("--output-len", default="64", help="same forms as --input-len")
    work.add_argument(
        "--ignore-eos", action="store_true", help="vLLM extension: generate max_tokens every time"
    )
    work.add_argument("--min-tokens", action="store_true", help="vLLM extension: min_tokens = max_tokens")
    work.add_argument("--tokenizer", help="the served model's tokenizer, for servers that send no usage")
    load = parser.add_argument_group("load")
    load.add_argument("--rate", type=_floats, default=[], help="open loop: requests/s, a comma list sweeps")
    load.add_argument("--concurrency", type=_ints, default=[], help="closed loop: a comma list sweeps")
    load.add_argument("--arrival", choices=["constant", "poisson", "gamma"], default="poisson")
    load.add_argument("--burstiness", type=float, default=1.0, help="gamma shape: < 1 burstier, 1 = Poisson")
    load.add_argument("--max-concurrency", type=int, help="open loop: cap on requests in flight")
    load.add_argument(
        "--duration", type=float, default=30.0, help="seconds per point, warm-up and cool-down in"
    )
    load.add_argument("--warmup", type=float, default=5.0, help="seconds at the start of a point left out")
    load.add_argument("--cooldown", type=float, default=2.0, help="seconds at the end of a point left out")
    load.add_argument("--seed", type=int, default=0)
    load.add_argument("--no-stop-at-saturation", dest="stop_at_saturation", action="store_false")
    measure = parser.add_argument_group("measurement and output")
    measure.add_argument("--slo", type=parse_slos, default={}, help="e.g. ttft_p90=500ms,itl_p90=50ms")
    measure.add_argument("--idle", type=float, default=5.0, help="seconds of idle power before and after")
    measure.add_argument("--scrape-period", type=float, default=1.0, help="seconds between /metrics reads")
    measure.add_argument("--per-request", action="store_true", help="keep per-request records (JSON, JSONL)")
    measure.add_argument("--out", type=Path, help="report folder (default: loadtest-results/<time>)")


def _default_model(url: str, api_key: str | None) -> str:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        data = httpx.get(f"{url.rstrip('/')}/v1/models", headers=headers, timeout=30).json()["data"]
    except (httpx.HTTPError, ValueError, KeyError) as err:
        raise TargetError(f"cannot list the models of {url}: {err!r}") from err
    if not data:
        raise TargetError(f"{url} serves no model")
    return data[0]["id"]


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """A validated `RunConfig` from parsed `run` flags."""
    source, dataset = (
        (args.dataset, None) if args.dataset in {"synthetic", "builtin"} else ("jsonl", args.dataset)
    )
    workload = WorkloadConfig(
        source=source,
        dataset=dataset,
        api=args.api,
        input_len=args.input_len,
        output_len=args.output_len,
        models=args.model or _default_model(args.url, args.api_key),
        ignore_eos=args.ignore_eos,
        min_tokens=args.min_tokens,
        tokenizer=args.tokenizer,
    )
    return RunConfig(
        url=args.url.rstrip("/"),
        api_key=args.api_key,
        workload=workload,
        mode="closed" if args.concurrency else "open",
        arrival=args.arrival,
        burstiness=args.burstiness,
        rates=args.rate,
        concurrencies=args.concurrency,
        max_concurrency=args.max_concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
        cooldown_s=args.cooldown,
        seed=args.seed,
        slos=args.slo,
        idle_s=args.idle,
        scrape_period_s=args.scrape_period,
        request_timeout_s=args.timeout,
        stop_at_saturation=args.stop_at_saturation,
        keep_requests=args.per_request,
    )


def write_reports(result: RunResult, out: Path, console: Console) -> None:
    """Console summary, then JSON, CSV, HTML (and JSONL with per-request records) under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    reports.render_summary(result, console)
    reports.write_json(result, out / "result.json")
    reports.write_csv(result, out / "points.csv")
    reports.write_html(result, out / "report.html")
    if result.requests is not None:
        reports.write_requests_jsonl(result, out / "requests.jsonl")
    console.print(f"reports written to {out}/ (result.json, points.csv, report.html)")


def _default_out() -> Path:
    return Path("loadtest-results") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def _run(args: argparse.Namespace, console: Console) -> int:
    try:
        config = config_from_args(args)
        result = run_sync(config, console)
    except (ValidationError, ValueError) as err:
        _error(console, f"invalid configuration: {err}")
        return 2
    except TargetError as err:
        _error(console, str(err))
        return 2
    write_reports(result, args.out or _default_out(), console)
    return 0


def _error(console: Console, message: str) -> None:
    # Error texts quote user input: no markup or emoji codes (":x:") may be read into them.
    console.print(message, style="red", markup=False, emoji=False, highlight=False)


def _compare(args: argparse.Namespace, console: Console) -> int:
    try:
        first, second = reports.read_json(args.first), reports.read_json(args.second)
    except (OSError, ValueError) as err:
        _error(console, f"cannot read a result file: {err}")
        return 2
    names = tuple(args.names) if args.names else (args.first.parent.name, args.second.parent.name)
    if args.markdown:
        print(reports.compare_markdown(first, second, names))  # noqa: T201 - the command's output
    else:
        reports.render_compare(first, second, console, names)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `wattserve-bench` and `python -m loadtest`."""
    parser = argparse.ArgumentParser(prog="wattserve-bench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_run_arguments(commands.add_parser("run", help="run a load test"))
    compare = commands.add_parser("compare", help="two result files side by side, with ratios")
    compare.add_argument("first", type=Path)
    compare.add_argument("second", type=Path)
    compare.add_argument("--names", nargs=2, help="column names (default: the result folders' names)")
    compare.add_argument("--markdown", action="store_true", help="print a markdown table")
    stub = commands.add_parser("stub", help="serve the bundled stub server")
    stub.add_argument("stub_args", nargs=argparse.REMAINDER)
    calibrate = commands.add_parser("calibrate", help="the harness's capacity against the stub server")
    calibrate.add_argument("--rate", type=float, default=300.0)
    calibrate.add_argument("--tokens", type=int, default=16)
    calibrate.add_argument("--duration", type=float, default=20.0)
    calibrate.add_argument(
        "--stub-itl-ms", type=float, default=1.0, help="the stub's gap between tokens (each its own read)"
    )
    calibrate.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    # Tables are wide; a pipe or CI log is not a terminal and would otherwise get 80 columns.
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
    if args.command == "run":
        return _run(args, console)
    if args.command == "compare":
        return _compare(args, console)
    if args.command == "stub":
        from loadtest.stub_server import main as stub_main  # noqa: PLC0415

        return stub_main(args.stub_args) or 0
    from loadtest.calibrate import calibrate as run_calibration  # noqa: PLC0415

    return run_calibration(args, console)


if __name__ == "__main__":
    sys.exit(main())
