"""vLLM's own engine flags on our command line, so `--model`, `--max-num-seqs`, ... mean what vLLM says."""

from __future__ import annotations

import argparse
import functools

from vllm import AsyncEngineArgs
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.exceptions import VLLMValidationError
from vllm.renderers.chat_utils import load_chat_template
from vllm.utils.argparse_utils import FlexibleArgumentParser


def new_parser(**kwargs: object) -> argparse.ArgumentParser:
    """An argument parser that accepts vLLM's flag spellings (`--max-model-len` and `--max_model_len`)."""
    return FlexibleArgumentParser(**kwargs)


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """Add every `AsyncEngineArgs` flag, with `--model` defaulting to none (the embedded model)."""
    AsyncEngineArgs.add_cli_args(parser)
    parser.set_defaults(model=None)


@functools.cache
def frontend_actions() -> tuple[argparse.Action, ...]:
    """The flags `vllm serve` defines beyond the engine's: its HTTP server, OpenAI layer and launcher.

    Read from vLLM's own parser, so a flag a new vLLM adds shows up here without anyone listing it.
    """
    serve = make_arg_parser(FlexibleArgumentParser())
    engine = FlexibleArgumentParser()
    AsyncEngineArgs.add_cli_args(engine)
    engine_options = set(engine._option_string_actions)  # noqa: SLF001 - argparse has no public listing
    return tuple(
        action
        for action in serve._actions  # noqa: SLF001
        if action.option_strings
        and not isinstance(action, argparse._HelpAction)  # noqa: SLF001
        and not engine_options & set(action.option_strings)
    )


def engine_args_from(namespace: argparse.Namespace) -> AsyncEngineArgs:
    """Build vLLM's engine arguments from parsed flags."""
    return AsyncEngineArgs.from_cli_args(namespace)


def read_chat_template(template: str | None) -> str | None:
    """`--chat-template` as vLLM reads it: a file, a template given inline, or one of vLLM's bundled names.

    Raises:
        ValueError: It names a file that cannot be read.
    """
    try:
        return load_chat_template(template)
    except VLLMValidationError as err:
        raise ValueError(str(err.args[0]) if err.args else str(err)) from err
