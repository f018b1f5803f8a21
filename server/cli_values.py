"""Flag values in the forms `vllm serve` takes (JSON lists and objects, adapter specs), checked on parse."""

from __future__ import annotations

import argparse
import json
from typing import Any

from adapters.discovery import parse_lora_module
from server.energy.meters.select import check_kind


def json_list(text: str) -> list[str]:
    """A flag value given as a JSON list of strings, as `vllm serve` takes its CORS lists."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err}); give a list such as '[\"*\"]'") from err
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise argparse.ArgumentTypeError("give a JSON list of strings, such as '[\"*\"]'")
    return value


def json_object(text: str) -> dict[str, Any]:
    """A flag value given as a JSON object, as `vllm serve` takes --default-chat-template-kwargs."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err}); give an object such as '{{}}'") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("give a JSON object, such as '{\"enable_thinking\": false}'")
    return value


def lora_module(text: str) -> str:
    """A `--lora-modules` value in one of vLLM's forms, checked as the command line is read."""
    try:
        parse_lora_module(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    return text


def energy_meter(text: str) -> str:
    """An `--energy-meter` value: auto, none, node, or meter parts joined by `+`."""
    try:
        return check_kind(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
