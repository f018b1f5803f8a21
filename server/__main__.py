"""`wattserve serve ...` (also `python -m server serve ...`): parse the command line, then run uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pydantic import ValidationError

from server.api.http_server import DrainingServer, log_level_number, uvicorn_config
from server.cli import parse_command_line, settings_from
from server.compose import compose
from server.compose_energy import WORKERS
from server.default_model import MODEL_NAME, ensure_default_model
from server.engine import plugin_gate, spin_tail
from server.engine.cli_args import engine_args_from, read_chat_template
from server.engine.grammar_gate import GrammarLimits
from server.engine.worker_energy import add_energy_extension
from server.runtime.lifecycle import EXIT_STARTUP_FAILED
from server.runtime.startup_adapters import StartupAdaptersError, refuse_missing_startup_adapters
from server.settings import ServerSettings

logger = logging.getLogger("wattserve")

# The embedded model's KV cache needs little room; vLLM's CPU default would take GiBs.
DEFAULT_MODEL_KV_CACHE_BYTES = 256 * 2**20


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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `wattserve` command."""
    args = parse_command_line(argv)
    try:
        settings = settings_from(args)
    except ValidationError as err:  # from WATTSERVE_* variables: flags were checked by the parser
        sys.stderr.write(f"wattserve: invalid settings: {err}\n")
        return 2
    logging.basicConfig(
        level=log_level_number(settings.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not settings.allow_missing_adapters:
        try:
            refuse_missing_startup_adapters(
                settings.lora_modules, settings.adapter_dir, settings.adapter_roots
            )
        except StartupAdaptersError as err:
            logger.error("%s", err)  # noqa: TRY400 - each adapter's reason is logged above
            return EXIT_STARTUP_FAILED
    if args.model is None:
        use_default_model(args, settings)
    if (settings.lora_modules or settings.adapter_dir) and args.enable_lora is None:
        args.enable_lora = True
    # Set before vLLM's engine arguments load its plugins: wattserve's plugins act only where this is set
    # (in this process and the engine processes that inherit it), never in another vLLM of this environment.
    os.environ[plugin_gate.ENV] = "1"
    engine_args = engine_args_from(args)
    if settings.energy_meter in ("auto", "nvml", WORKERS):  # those that may meter through the workers
        try:
            add_energy_extension(engine_args, required=settings.energy_meter == WORKERS)
        except ValueError as err:
            logger.error("%s", err)  # noqa: TRY400 - a usage error, not a crash
            return 2
    spin_s = settings.resolved_engine_spin_seconds
    if spin_s is not None:  # read by the plugin in each of vLLM's processes
        os.environ[spin_tail.ENV] = str(spin_s)
    try:
        chat_template = read_chat_template(settings.chat_template)
    except (OSError, ValueError) as err:
        logger.error("--chat-template: %s", err)  # noqa: TRY400 - a usage error, not a crash
        return 2

    def start_engine():  # noqa: ANN202 - the concrete type lives behind the vLLM import
        from server.engine.output_parsing import ParserOptions  # noqa: PLC0415 - imports vLLM
        from server.engine.vllm_engine import VllmEngine  # noqa: PLC0415 - vLLM imports take seconds

        grammar_limits = GrammarLimits(settings.max_grammar_compile_seconds, settings.grammar_compile_workers)
        return VllmEngine.start(
            engine_args,
            chat_template=chat_template,
            grammar_limits=grammar_limits,
            template_defaults=settings.default_chat_template_kwargs,
            fingerprint=(settings.fingerprint_mode, settings.fingerprint_value),
            parsers=ParserOptions(
                tool_call_parser=settings.tool_call_parser,
                enable_auto_tool_choice=settings.enable_auto_tool_choice,
                tool_parser_plugin=settings.tool_parser_plugin,
                tool_strict_level=settings.tool_strict_level,
            ),
        )

    try:
        composed = compose(settings, start_engine, stop_engine=lambda engine: engine.shutdown())
    except ValueError as err:  # settings only the app can check, such as a --middleware that cannot import
        logger.error("%s", err)  # noqa: TRY400 - a usage error, not a crash
        return 2
    config = uvicorn_config(composed.app, settings)
    lifecycle = composed.lifecycle
    server = DrainingServer(config, on_signal=lifecycle.on_signal)
    lifecycle.bind_server(lambda: setattr(server, "should_exit", True))
    try:
        server.run()
    except SystemExit:
        # uvicorn exits 3 when the app fails to start, the status this server gives engine death; a
        # failure the composition root names (startup adapters) ends with its own status instead.
        if not lifecycle.exit_code:
            raise
    return lifecycle.exit_code


if __name__ == "__main__":
    sys.exit(main())
