"""The `wattserve serve` command line: vLLM's engine flags, and ours, each named after a settings field.

A flag's destination is its settings field, so parsed flags become settings without a second list, and
its help shows the field's real default. Flags left unset fall through to WATTSERVE_* variables, then to
the defaults.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from server.engine.cli_args import add_engine_args, new_parser
from server.settings import ServerSettings


@dataclass(frozen=True)
class Flag:
    """One wattserve flag: its spelling, the settings field it sets, its help, extra argparse options."""

    flag: str
    field: str
    help: str
    options: dict[str, Any] = dataclass_field(default_factory=dict)


SERVER_FLAGS: list[Flag] = [
    Flag("--host", "host", "Address to listen on."),
    Flag("--port", "port", "Port to listen on.", {"type": int}),
    Flag("--api-key", "api_key", "Require this bearer key on /v1 routes and the API docs."),
    Flag("--admin-key", "admin_key", "Require this key (and not --api-key) to manage adapters."),
    Flag("--cache-dir", "cache_dir", "Where the embedded default model is built."),
    Flag(
        "--uvicorn-log-level",
        "log_level",
        "Log level.",
        {"choices": ["debug", "info", "warning", "error", "critical"]},
    ),
    Flag(
        "--disable-fastapi-docs",
        "disable_fastapi_docs",
        "Serve no /docs, /redoc or /openapi.json.",
        {"action": "store_true"},
    ),
    Flag(
        "--shutdown-grace-seconds",
        "shutdown_grace_seconds",
        "On SIGTERM, how long in-flight requests may finish before streams are cut.",
        {"type": float},
    ),
    Flag(
        "--keep-alive-on-engine-death",
        "keep_alive_on_engine_death",
        "Keep serving 503s after the engine dies instead of exiting non-zero.",
        {"action": "store_true"},
    ),
]
ADAPTER_FLAGS: list[Flag] = [
    Flag(
        "--adapter-root",
        "adapter_roots",
        "Directory adapters may be loaded from (repeatable).",
        {"action": "append"},
    ),
    Flag("--adapter-dir", "adapter_dir", "Load every adapter folder here at startup."),
    Flag(
        "--lora-modules",
        "lora_modules",
        "Adapters as name=path (vLLM's form).",
        {"nargs": "+", "action": "extend"},
    ),
    Flag(
        "--watch-adapters",
        "watch_adapters",
        "Follow --adapter-dir: load and unload on changes.",
        {"action": "store_true"},
    ),
]
ADMISSION_FLAGS: list[Flag] = [
    Flag(
        "--max-concurrent-requests",
        "max_concurrent_requests",
        "Requests in the engine at once (unset: twice --max-num-seqs).",
        {"type": int},
    ),
    Flag(
        "--max-queued-requests",
        "max_queued_requests",
        "Requests waiting for a slot before 429 (unset: twice --max-num-seqs).",
        {"type": int},
    ),
    Flag(
        "--max-request-body-bytes", "max_request_body_bytes", "Larger request bodies get 413.", {"type": int}
    ),
    Flag(
        "--max-prompt-chars",
        "max_prompt_chars",
        "Longer prompts get 400 before rendering (unset: 32 x --max-model-len).",
        {"type": int},
    ),
]
TIER_FLAGS: list[Flag] = [
    Flag(
        "--flex-max-wait-seconds",
        "flex_max_wait_seconds",
        "Longest a flex request waits in the flex lane before it is admitted anyway.",
        {"type": float},
    ),
    Flag(
        "--flex-max-queued",
        "flex_max_queued",
        "Flex requests the lane holds before 429 (unset: four times --max-num-seqs).",
        {"type": int},
    ),
    Flag(
        "--flex-batch-size",
        "flex_batch_size",
        "Flex requests that start a batch of their own on an idle engine (unset: half --max-num-seqs).",
        {"type": int},
    ),
    Flag(
        "--energy-policy",
        "energy_policy",
        "slo: batch more while the latency SLOs below have slack.",
        {"choices": ["off", "slo"]},
    ),
    Flag(
        "--slo-ttft-p90",
        "slo_ttft_p90",
        "The governor's p90 time-to-first-token target, seconds.",
        {"type": float},
    ),
    Flag(
        "--slo-itl-p90",
        "slo_itl_p90",
        "The governor's p90 inter-token-latency target, seconds.",
        {"type": float},
    ),
    Flag(
        "--grid-intensity-source",
        "grid_intensity_source",
        "Grid gCO2e/kWh over time: a file (CSV or JSON) or an Electricity Maps or WattTime URL.",
    ),
    Flag(
        "--grid-intensity-refresh-seconds",
        "grid_intensity_refresh_seconds",
        "How often the grid-intensity source is read again.",
        {"type": float},
    ),
    Flag(
        "--grid-intensity-header",
        "grid_intensity_headers",
        "An HTTP header for the source, as 'Name: value' (repeatable; e.g. 'auth-token: ...').",
        {"action": "append"},
    ),
    Flag(
        "--flex-max-intensity",
        "flex_max_intensity",
        "Hold flex work while the grid is dirtier than this many gCO2e/kWh (within the wait bound).",
        {"type": float},
    ),
]
ENERGY_FLAGS: list[Flag] = [
    Flag(
        "--energy-meter",
        "energy_meter",
        "auto: NVML, else RAPL, else the labelled CPU-time estimate.",
        {"choices": ["auto", "nvml", "rapl", "estimated", "none"]},
    ),
    Flag("--energy-sample-period", "energy_sample_period_s", "Seconds between meter reads.", {"type": float}),
    Flag(
        "--prefill-energy-weight",
        "prefill_energy_weight",
        "Dynamic-energy weight of a prompt token.",
        {"type": float},
    ),
    Flag(
        "--decode-energy-weight",
        "decode_energy_weight",
        "Dynamic-energy weight of an output token.",
        {"type": float},
    ),
    Flag(
        "--idle-floor-min-seconds",
        "idle_floor_min_seconds",
        "Idle stretch that re-measures the idle power floor.",
        {"type": float},
    ),
    Flag(
        "--grid-intensity",
        "grid_intensity_g_per_kwh",
        "Grid carbon intensity, gCO2e per kWh.",
        {"type": float},
    ),
    Flag("--pue", "pue", "Power usage effectiveness of the data centre.", {"type": float}),
    Flag(
        "--estimated-watts-per-core",
        "estimated_watts_per_core",
        "Watts per busy core for the estimate.",
        {"type": float},
    ),
]


def _add_flags(group: argparse._ArgumentGroup, flags: list[Flag]) -> None:
    for flag in flags:
        default = ServerSettings.model_fields[flag.field].get_default(call_default_factory=True)
        shown = default is not None and default not in ([], False) and "unset:" not in flag.help
        text = f"{flag.help} (default: {default})" if shown else flag.help
        options = dict(flag.options)
        if options.get("action") != "store_true" and "choices" not in options:
            options.setdefault("metavar", flag.flag.removeprefix("--").replace("-", "_").upper())
        # SUPPRESS: an unset flag leaves no attribute, so the settings' own default (or WATTSERVE_*)
        # applies, and vLLM's help formatter does not print "(default: None)" after it.
        group.add_argument(flag.flag, dest=flag.field, default=argparse.SUPPRESS, help=text, **options)


def build_parser() -> argparse.ArgumentParser:
    """The `wattserve` command line: our flags plus every vLLM engine flag."""
    parser = new_parser(prog="wattserve", description="Energy-aware OpenAI-compatible LLM server on vLLM.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="Serve a model over the OpenAI HTTP API.")
    # vLLM's parser rewrites `serve --model X` into `serve X`, as for `vllm serve`: both spellings work.
    serve.add_argument("model_tag", nargs="?", default=None, help="Model path or hub id (same as --model).")
    for title, flags in (
        ("wattserve", SERVER_FLAGS),
        ("adapters", ADAPTER_FLAGS),
        ("admission and input limits", ADMISSION_FLAGS),
        ("service tiers and energy policy", TIER_FLAGS),
        ("energy", ENERGY_FLAGS),
    ):
        _add_flags(serve.add_argument_group(title), flags)
    add_engine_args(serve)
    return parser


def parse_command_line(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse `wattserve ...`; the positional model and `--model` end up in `args.model`."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except ValueError as err:  # vLLM's parser reports some usage errors this way
        parser.error(str(err))
    if args.model_tag is not None:
        args.model = args.model_tag
    return args


def settings_from(args: argparse.Namespace) -> ServerSettings:
    """Flags given on the command line win over WATTSERVE_* environment variables, which win over defaults."""
    given = {
        field: getattr(args, field)
        for field in ServerSettings.model_fields
        if getattr(args, field, None) is not None
    }
    return ServerSettings(**given)
