"""`wattserve serve ...` (also `python -m server serve ...`): parse the command line, then run uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from server.app import create_app
from server.default_model import MODEL_NAME, ensure_default_model
from server.engine.cli_args import add_engine_args, engine_args_from, new_parser
from server.settings import ServerSettings

logger = logging.getLogger("wattserve")

# The embedded model's KV cache needs little room; vLLM's CPU default would take GiBs.
DEFAULT_MODEL_KV_CACHE_BYTES = 256 * 2**20


def build_parser() -> argparse.ArgumentParser:
    """The `wattserve` command line: our HTTP flags plus every vLLM engine flag."""
    parser = new_parser(prog="wattserve", description="Energy-aware OpenAI-compatible LLM server on vLLM.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="Serve a model over the OpenAI HTTP API.")
    # vLLM's parser rewrites `serve --model X` into `serve X`, as for `vllm serve`: both spellings work.
    serve.add_argument("model_tag", nargs="?", default=None, help="Model path or hub id (same as --model).")
    ours = serve.add_argument_group("wattserve")
    ours.add_argument("--host", default=None, help="Address to listen on (default 127.0.0.1).")
    ours.add_argument("--port", type=int, default=None, help="Port to listen on (default 8000).")
    ours.add_argument("--api-key", default=None, help="Require this bearer key on /v1 routes.")
    ours.add_argument("--cache-dir", default=None, help="Where the embedded default model is built.")
    ours.add_argument(
        "--admin-key", default=None, help="Require this key (and not --api-key) to manage adapters."
    )
    ours.add_argument(
        "--adapter-root",
        action="append",
        default=None,
        help="Directory adapters may be loaded from (repeatable).",
    )
    ours.add_argument("--adapter-dir", default=None, help="Load every adapter folder here at startup.")
    ours.add_argument(
        "--lora-modules",
        nargs="+",
        action="extend",
        default=None,
        help="Adapters as name=path (vLLM's form).",
    )
    ours.add_argument(
        "--watch-adapters",
        action="store_true",
        default=None,
        help="Follow --adapter-dir: load/unload on changes.",
    )
    ours.add_argument(
        "--uvicorn-log-level", default=None, choices=["debug", "info", "warning", "error", "critical"]
    )
    ours.add_argument(
        "--max-concurrent-requests",
        type=int,
        default=None,
        help="Requests in the engine at once (default: twice --max-num-seqs).",
    )
    ours.add_argument(
        "--max-queued-requests",
        type=int,
        default=None,
        help="Requests waiting for a slot before 429 (default: twice --max-num-seqs).",
    )
    energy = serve.add_argument_group("energy")
    energy.add_argument("--energy-meter", default=None, choices=["auto", "nvml", "rapl", "estimated", "none"])
    energy.add_argument(
        "--energy-sample-period", type=float, default=None, help="Seconds between meter reads."
    )
    energy.add_argument("--prefill-energy-weight", type=float, default=None, help="Weight of a prompt token.")
    energy.add_argument("--decode-energy-weight", type=float, default=None, help="Weight of an output token.")
    energy.add_argument("--grid-intensity", type=float, default=None, help="gCO2e per kWh (default 475).")
    energy.add_argument("--pue", type=float, default=None, help="Power usage effectiveness (default 1.0).")
    energy.add_argument(
        "--estimated-watts-per-core", type=float, default=None, help="Watts per busy core for the estimate."
    )
    add_engine_args(serve)
    return parser


def settings_from(args: argparse.Namespace) -> ServerSettings:
    """Command-line values win over WATTSERVE_* environment variables, which win over defaults."""
    given = {
        key: value
        for key, value in {
            "host": args.host,
            "port": args.port,
            "api_key": args.api_key,
            "cache_dir": args.cache_dir,
            "log_level": args.uvicorn_log_level,
            "admin_key": args.admin_key,
            "adapter_roots": args.adapter_root,
            "adapter_dir": args.adapter_dir,
            "lora_modules": args.lora_modules,
            "watch_adapters": args.watch_adapters,
            "energy_meter": args.energy_meter,
            "energy_sample_period_s": args.energy_sample_period,
            "prefill_energy_weight": args.prefill_energy_weight,
            "decode_energy_weight": args.decode_energy_weight,
            "grid_intensity_g_per_kwh": args.grid_intensity,
            "pue": args.pue,
            "estimated_watts_per_core": args.estimated_watts_per_core,
            "max_concurrent_requests": args.max_concurrent_requests,
            "max_queued_requests": args.max_queued_requests,
        }.items()
        if value is not None
    }
    return ServerSettings(**given)


def use_default_model(args: argparse.Namespace, settings: ServerSettings) -> None:
    """Point the engine flags at the embedded model, building it on first use."""
    default = ensure_default_model(settings.cache_dir)
    args.model = str(default.model_dir)
    args.served_model_name = args.served_model_name or [MODEL_NAME]
    if args.dtype == "auto":
        # float32 as generated: vLLM's CPU default (bfloat16) would make greedy output less stable.
        args.dtype = "float32"
    if args.enable_lora is None:
        # Serve the demo adapters; four slots let base and both demos share batches.
        args.enable_lora, args.max_lora_rank, args.max_loras = True, 8, 4
        args.max_cpu_loras = args.max_cpu_loras or 16
        settings.adapter_roots.append(default.adapters_dir)
        settings.lora_modules.extend(f"{name}={path}" for name, path in default.adapter_dirs.items())
    if args.kv_cache_memory_bytes is None:
        args.kv_cache_memory_bytes = DEFAULT_MODEL_KV_CACHE_BYTES
    logger.warning(
        "No --model given: serving the embedded model '%s' from %s. It has RANDOM weights and answers "
        "with random text; it is there for tests and demos. Serve a real model with "
        "`wattserve serve --model <local path or hub id>`.",
        MODEL_NAME,
        default.model_dir,
    )


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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `wattserve` command."""
    args = parse_command_line(argv)
    settings = settings_from(args)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.model is None:
        use_default_model(args, settings)
    if (settings.lora_modules or settings.adapter_dir) and args.enable_lora is None:
        args.enable_lora = True
    engine_args = engine_args_from(args)

    def start_engine():  # noqa: ANN202 - the concrete type lives behind the vLLM import
        from server.engine.vllm_engine import VllmEngine  # noqa: PLC0415 - vLLM imports take seconds

        return VllmEngine.start(engine_args)

    app = create_app(settings, start_engine, stop_engine=lambda engine: engine.shutdown())
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
