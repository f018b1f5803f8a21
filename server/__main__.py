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
        "--uvicorn-log-level", default=None, choices=["debug", "info", "warning", "error", "critical"]
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
    if args.kv_cache_memory_bytes is None:
        args.kv_cache_memory_bytes = DEFAULT_MODEL_KV_CACHE_BYTES
    logger.warning(
        "No --model given: serving the embedded model '%s' from %s. It has RANDOM weights and answers "
        "with random text; it is there for tests and demos. Serve a real model with "
        "`wattserve serve --model <local path or hub id>`.",
        MODEL_NAME,
        default.model_dir,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `wattserve` command."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except ValueError as err:  # vLLM's parser reports some usage errors this way
        parser.error(str(err))
    if args.model_tag is not None:
        args.model = args.model_tag
    settings = settings_from(args)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.model is None:
        use_default_model(args, settings)
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
