"""The commands of `wattserve-bench` (`run`, `compare`, `calibrate`) on parsed arguments."""

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
from loadtest.calibrate import calibration_out, report_verdict, run_calibration
from loadtest.config import RunConfig
from loadtest.results import RunResult
from loadtest.runner import TargetError, run_sync
from loadtest.workload import WorkloadConfig


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
    api_key = args.api_key or os.environ.get("OPENAI_API_KEY")
    source, dataset = (
        (args.dataset, None) if args.dataset in {"synthetic", "builtin"} else ("jsonl", args.dataset)
    )
    workload = WorkloadConfig(
        source=source,
        dataset=dataset,
        api=args.api,
        input_len=args.input_len,
        output_len=args.output_len,
        models=args.model or _default_model(args.url, api_key),
        service_tiers=args.service_tier,
        ignore_eos=args.ignore_eos,
        min_tokens=args.min_tokens,
        tokenizer=args.tokenizer,
    )
    return RunConfig(
        url=args.url.rstrip("/"),
        api_key=api_key,
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
    reports.write_breakdown_csv(result, out / "breakdown.csv")
    reports.write_html(result, out / "report.html")
    if result.requests is not None:
        reports.write_requests_jsonl(result, out / "requests.jsonl")
    console.print(f"reports written to {out}/ (result.json, points.csv, breakdown.csv, report.html)")


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


def _calibrate(args: argparse.Namespace, console: Console) -> int:
    out = calibration_out(args)
    result = run_calibration(args, out, console)
    write_reports(result, out, console)
    return report_verdict(result, args, console)


def dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command (`run`, `compare` or `calibrate`) and return its exit status."""
    # Tables are wide; a pipe or CI log is not a terminal and would otherwise get 80 columns.
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
    if args.command == "run":
        return _run(args, console)
    if args.command == "compare":
        return _compare(args, console)
    return _calibrate(args, console)
