"""vLLM's own engine flags on our command line, so `--model`, `--max-num-seqs`, ... mean what vLLM says."""

from __future__ import annotations

import argparse

from vllm import AsyncEngineArgs
from vllm.utils.argparse_utils import FlexibleArgumentParser


def new_parser(**kwargs: object) -> argparse.ArgumentParser:
    """An argument parser that accepts vLLM's flag spellings (`--max-model-len` and `--max_model_len`)."""
    return FlexibleArgumentParser(**kwargs)


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """Add every `AsyncEngineArgs` flag, with `--model` defaulting to none (the embedded model)."""
    AsyncEngineArgs.add_cli_args(parser)
    parser.set_defaults(model=None)


def engine_args_from(namespace: argparse.Namespace) -> AsyncEngineArgs:
    """Build vLLM's engine arguments from parsed flags."""
    return AsyncEngineArgs.from_cli_args(namespace)
