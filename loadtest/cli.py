"""`wattserve-bench`: load-test any OpenAI-compatible server; energy figures where it exposes wattserve's.

wattserve-bench run --url URL --rate 2,4,8 [--arrival poisson] ... --out DIR
wattserve-bench run --url URL --concurrency 1,4,16 ...
wattserve-bench compare A/result.json B/result.json [--names A B] [--markdown]
wattserve-bench stub --port 9000             # the bundled stub server, for calibration
wattserve-bench calibrate                    # the harness's own capacity against the stub

This module parses the command line with the server's own dependencies only, so that a server install
without the `bench` extra gets a one-line hint instead of a traceback; the commands live in
`loadtest.commands`.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from loadtest.slo import parse_slos
from loadtest.version import harness_version

# Modules (not distributions) that the `bench` extra adds and every command but `stub` imports.
BENCH_MODULES = ("aiohttp", "matplotlib", "numpy", "rich", "uvloop")
INSTALL_HINT = "pip install 'wattserve[bench]'"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show every option's default; help that states its own default keeps its wording."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.help and "default" in action.help:
            return action.help
        return super()._get_help_string(action)


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `run`."""
    target = parser.add_argument_group("target")
    target.add_argument("--url", default="http://127.0.0.1:8000", help="base URL of the server")
    # Resolved from the environment later: a default read here would be printed by --help.
    target.add_argument("--api-key", help="bearer token (default: $OPENAI_API_KEY, else none)")
    target.add_argument("--timeout", type=float, default=600.0, help="per-request timeout, seconds")
    work = parser.add_argument_group("workload")
    work.add_argument("--api", choices=["chat", "completions"], default="chat", help="OpenAI endpoint")
    work.add_argument(
        "--model",
        help="NAME, NAME=W,NAME=W (weighted mix) or zipf:S:NAME,NAME,... (default: the first served model)",
    )
    work.add_argument(
        "--service-tier",
        metavar="TIERS",
        help="OpenAI service_tier: TIER or a seeded weighted mix TIER=W,TIER=W, TIER in auto, default, flex, "
        "priority (default: none sent)",
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
    work.add_argument(
        "--tokenizer",
        help="the served model's tokenizer, for servers that send no usage (default: none, count chunks)",
    )
    load = parser.add_argument_group("load")
    load.add_argument(
        "--rate", type=_floats, default=[], help="open loop: requests/s, a comma list sweeps (default: none)"
    )
    load.add_argument(
        "--concurrency", type=_ints, default=[], help="closed loop: a comma list sweeps (default: none)"
    )
    load.add_argument(
        "--arrival", choices=["constant", "poisson", "gamma"], default="poisson", help="open-loop arrivals"
    )
    load.add_argument("--burstiness", type=float, default=1.0, help="gamma shape: < 1 burstier, 1 = Poisson")
    load.add_argument(
        "--max-concurrency", type=int, help="open loop: cap on requests in flight (default: no cap)"
    )
    load.add_argument(
        "--duration", type=float, default=30.0, help="seconds per point, warm-up and cool-down in"
    )
    load.add_argument("--warmup", type=float, default=5.0, help="seconds at the start of a point left out")
    load.add_argument("--cooldown", type=float, default=2.0, help="seconds at the end of a point left out")
    load.add_argument("--seed", type=int, default=0, help="seed of schedules, prompts and mixes")
    load.add_argument(
        "--no-stop-at-saturation",
        dest="stop_at_saturation",
        action="store_false",
        help="run every point of a sweep (default: stop after a saturated point)",
    )
    measure = parser.add_argument_group("measurement and output")
    measure.add_argument(
        "--slo", type=parse_slos, default={}, help="e.g. ttft_p90=500ms,itl_p90=50ms (default: none)"
    )
    measure.add_argument("--idle", type=float, default=5.0, help="seconds of idle power before and after")
    measure.add_argument("--scrape-period", type=float, default=1.0, help="seconds between /metrics reads")
    measure.add_argument("--per-request", action="store_true", help="keep per-request records (JSON, JSONL)")
    measure.add_argument("--out", type=Path, help="report folder (default: loadtest-results/<time>)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand; it needs none of the `bench` extra's modules."""
    parser = argparse.ArgumentParser(
        prog="wattserve-bench", description=__doc__.splitlines()[0], formatter_class=_Formatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {harness_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    add_run_arguments(commands.add_parser("run", help="run a load test", formatter_class=_Formatter))
    compare = commands.add_parser(
        "compare", help="two result files side by side, with ratios", formatter_class=_Formatter
    )
    compare.add_argument("first", type=Path, help="result.json of the reference run (A)")
    compare.add_argument("second", type=Path, help="result.json of the run compared with it (B)")
    compare.add_argument("--names", nargs=2, help="column names (default: the result folders' names)")
    compare.add_argument("--markdown", action="store_true", help="print a markdown table")
    stub = commands.add_parser("stub", help="serve the bundled stub server", formatter_class=_Formatter)
    stub.add_argument(
        "stub_args", nargs=argparse.REMAINDER, help="the stub server's own flags (see stub --help)"
    )
    calibrate = commands.add_parser(
        "calibrate", help="the harness's capacity against the stub server", formatter_class=_Formatter
    )
    calibrate.add_argument("--rate", type=float, default=300.0, help="requests/s offered to the stub")
    calibrate.add_argument("--tokens", type=int, default=16, help="output tokens per request")
    calibrate.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    calibrate.add_argument(
        "--stub-itl-ms", type=float, default=1.0, help="the stub's gap between tokens (each its own read)"
    )
    calibrate.add_argument("--out", type=Path, help="report folder (default: loadtest-results/calibration)")
    return parser


def missing_bench_modules() -> list[str]:
    """The `bench` extra's modules (`BENCH_MODULES`) that cannot be imported here."""
    missing = []
    for name in BENCH_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken install, or a module blocked in sys.modules
            found = False
        if not found:
            missing.append(name)
    return missing


def main(argv: list[str] | None = None) -> int:
    """Entry point of `wattserve-bench` and `python -m loadtest`."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["stub"]:  # every flag after it is the stub server's, --help included
        from loadtest.stub_server import main as stub_main  # noqa: PLC0415 - server dependencies only

        return stub_main(argv[1:]) or 0
    args = build_parser().parse_args(argv)
    missing = missing_bench_modules()
    if missing:
        message = f"wattserve-bench {args.command} needs the bench extra (missing {', '.join(missing)}): "
        print(message + INSTALL_HINT, file=sys.stderr)  # noqa: T201 - rich may be the missing module
        return 1
    from loadtest.commands import dispatch  # noqa: PLC0415 - imports the bench extra's modules

    return dispatch(args)


if __name__ == "__main__":
    sys.exit(main())
