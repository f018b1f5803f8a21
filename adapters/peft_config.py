"""Check the contents of `adapter_config.json` (PEFT's LoRA config): every field vLLM reads, by type.

Any JSON value may sit in any field; each one vLLM reads is checked here, so a config that would make
vLLM fail while loading (a traceback in the engine) or compute NaN (a non-finite alpha) is refused first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from adapters.errors import AdapterValidationError, Reason

CONFIG_FILE = "adapter_config.json"
# Initialisations that only set the starting weights; vLLM refuses the others (they change the base).
PLAIN_INITS = {"gaussian", "eva", "orthogonal", "mica", "lora_ga"}
# Features vLLM refuses when it loads an adapter (vllm/lora/peft_helper.py, `_validate_features`).
UNSUPPORTED_FLAGS = {
    "use_dora": "DoRA",
    "lora_bias": "LoRA bias",
    "alora_invocation_tokens": "Activated LoRA",
    "layer_replication": "layer replication",
    "use_bdlora": "block-diagonal LoRA",
    "use_qalora": "QALoRA",
    "modules_to_save": "modules_to_save (fully trained modules)",
}


@dataclass(frozen=True)
class LoraConfig:
    """The fields of a LoRA config that wattserve checks and reports."""

    rank: int
    alpha: float
    target_modules: str | tuple[str, ...]
    base_model: str | None
    max_rank: int  # the largest of `r` and the `rank_pattern` ranks


def _malformed(message: str) -> AdapterValidationError:
    return AdapterValidationError(Reason.MALFORMED_CONFIG, f"{CONFIG_FILE}: {message}")


def _show(value: object) -> str:
    """A short description of any JSON value, safe to put in an error message."""
    if isinstance(value, str):
        return repr(value[:80]) + ("..." if len(value) > 80 else "")
    if isinstance(value, (bool, int, float)) or value is None:
        return repr(value)[:80]
    return "a list" if isinstance(value, list) else "an object"


def _text(value: object, field: str) -> str:
    # Lone surrogates parse from JSON escapes but cannot be encoded into a response or a file name.
    if not isinstance(value, str):
        raise _malformed(f"'{field}' must be a string, not {_show(value)}.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise _malformed(f"'{field}' is not valid Unicode text.") from err
    return value


def _positive_int(value: object, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _malformed(f"'{field}' must be a positive integer, not {_show(value)}.")
    return value


def _finite_number(value: object, field: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _malformed(f"'{field}' must be a number, not {_show(value)}.")
    try:
        number = float(value)
    except OverflowError as err:  # an integer too large for a float
        raise _malformed(f"'{field}' is too large.") from err
    if not math.isfinite(number):
        raise _malformed(f"'{field}' must be finite, not {_show(value)}.")
    return number


def _regex(pattern: str, field: str, wrapped: bool = False) -> re.Pattern[str]:
    # vLLM matches pattern keys as rf"(.*\.)?({key})$" (vllm/lora/peft_helper.py, `_match_pattern`).
    source = rf"(.*\.)?({pattern})$" if wrapped else pattern
    try:
        return re.compile(source)
    except (re.error, RecursionError, OverflowError, ValueError) as err:
        raise _malformed(f"'{field}' holds an invalid regular expression {_show(pattern)}.") from err


def _pattern_map(config: dict, field: str, read_value: Callable[[object, str], float]) -> dict[str, float]:
    mapping = config.get(field)
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise _malformed(
            f"'{field}' must be an object mapping module patterns to values, not {_show(mapping)}."
        )
    result = {}
    for key, value in mapping.items():
        _regex(_text(key, f"{field} key"), f"{field} key", wrapped=True)
        result[key] = read_value(value, f"{field}[{key[:40]!r}]")
    return result


def _targets(value: object) -> str | tuple[str, ...]:
    if isinstance(value, str):
        _regex(_text(value, "target_modules"), "target_modules")
        return value
    if isinstance(value, list):
        return tuple(_text(item, "target_modules entry") for item in value)
    raise _malformed(f"'target_modules' must be a list of names or a regex, not {_show(value)}.")


def _check_supported(config: dict) -> None:
    for field, feature in UNSUPPORTED_FLAGS.items():
        if config.get(field):
            raise AdapterValidationError(
                Reason.UNSUPPORTED_FEATURE,
                f"{CONFIG_FILE} uses {feature} ('{field}'), which vLLM does not serve.",
            )
    bias = config.get("bias", "none")
    if bias != "none":
        raise AdapterValidationError(
            Reason.UNSUPPORTED_FEATURE, f"{CONFIG_FILE}: bias {_show(bias)} is not served; only 'none' is."
        )
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in PLAIN_INITS:
        raise AdapterValidationError(
            Reason.UNSUPPORTED_FEATURE,
            f"{CONFIG_FILE}: init_lora_weights {_show(init)} changes the base model's weights; convert the "
            "adapter to a plain LoRA adapter first.",
        )


def parse_lora_config(config: object) -> LoraConfig:
    """Check a parsed `adapter_config.json` and return the fields wattserve uses.

    Args:
        config: Whatever `json.loads` returned for the file.

    Returns:
        The checked fields.

    Raises:
        AdapterValidationError: `malformed_adapter_config`, `not_a_lora_adapter` or
            `unsupported_lora_feature`.
    """
    if not isinstance(config, dict):
        raise _malformed(f"the file must hold a JSON object, not {_show(config)}.")
    peft_type = config.get("peft_type")
    if not isinstance(peft_type, str) or peft_type.upper() != "LORA":
        raise AdapterValidationError(
            Reason.NOT_LORA, f"{CONFIG_FILE} has peft_type {_show(peft_type)}; only LORA is served."
        )
    rank = _positive_int(config.get("r"), "r")
    if "lora_alpha" not in config:  # vLLM requires it (no default in its PEFTHelper)
        raise _malformed("'lora_alpha' is missing.")
    alpha = _finite_number(config["lora_alpha"], "lora_alpha")
    targets = _targets(config.get("target_modules"))
    ranks = _pattern_map(config, "rank_pattern", _positive_int)
    _pattern_map(config, "alpha_pattern", _finite_number)
    base_model = config.get("base_model_name_or_path")
    if base_model is not None:
        base_model = _text(base_model, "base_model_name_or_path")
    _check_supported(config)
    return LoraConfig(
        rank=rank,
        alpha=alpha,
        target_modules=targets,
        base_model=base_model or None,
        max_rank=max([rank, *ranks.values()]),
    )
