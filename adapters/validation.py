"""Check an adapter directory before the engine sees it: name, path, config, weights, base model, limits."""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path, PurePath

from adapters.errors import AdapterValidationError, Reason
from adapters.types import AdapterFacts

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
# Pickle-based formats can run code when loaded; only safetensors is accepted.
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
MAX_HEADER_BYTES = 100 * 2**20


@dataclass(frozen=True)
class BaseModelInfo:
    """What an adapter is checked against."""

    names: frozenset[str]  # identifiers of the base model an adapter's config may name
    module_names: frozenset[str] | None  # leaf module names (q_proj, ...); None when unknown
    max_rank: int


def check_name(name: str, what: str = "adapter name") -> str:
    """Refuse names that could not be a `model` value or a folder name (spaces, slashes, ...)."""
    if not NAME_PATTERN.fullmatch(name):
        raise AdapterValidationError(
            Reason.BAD_NAME,
            f"Invalid {what} {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit.",
        )
    return name


def check_version(version: str) -> str:
    """Refuse version labels with characters outside the name alphabet."""
    if not VERSION_PATTERN.fullmatch(version):
        raise AdapterValidationError(Reason.BAD_NAME, f"Invalid adapter version {version!r}.")
    return version


def resolve_within_roots(raw_path: str, roots: list[Path]) -> Path:
    """Resolve `raw_path` and check it lies inside one of `roots`, symlinks followed.

    Raises:
        AdapterValidationError: `..` in the path, no such directory, or outside every root.
    """
    if ".." in PurePath(raw_path).parts:
        raise AdapterValidationError(
            Reason.PARENT_REFERENCE, f"Adapter path {raw_path!r} must not contain '..'."
        )
    path = Path(raw_path).expanduser()
    if not path.is_dir():
        raise AdapterValidationError(Reason.PATH_NOT_FOUND, f"Adapter directory {raw_path!r} does not exist.")
    resolved = path.resolve(strict=True)
    real_roots = [root.resolve() for root in roots]
    if any(resolved.is_relative_to(root) for root in real_roots):
        return resolved
    lexical = Path.cwd() / path if not path.is_absolute() else path
    if any(lexical.is_relative_to(root) for root in roots + real_roots):
        raise AdapterValidationError(
            Reason.SYMLINK_ESCAPE,
            f"Adapter path {raw_path!r} is a symlink that leads outside the allowed roots.",
        )
    raise AdapterValidationError(
        Reason.OUTSIDE_ROOTS,
        f"Adapter path {raw_path!r} is outside the allowed adapter roots "
        f"({', '.join(map(str, roots)) or 'none'}).",
    )


def _read_config(directory: Path) -> dict:
    config_path = directory / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError as err:
        raise AdapterValidationError(Reason.MALFORMED_CONFIG, f"{CONFIG_FILE} is missing.") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AdapterValidationError(
            Reason.MALFORMED_CONFIG, f"{CONFIG_FILE} is not valid JSON: {err}"
        ) from err
    if not isinstance(config, dict):
        raise AdapterValidationError(Reason.MALFORMED_CONFIG, f"{CONFIG_FILE} must hold a JSON object.")
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise AdapterValidationError(
            Reason.NOT_LORA, f"{CONFIG_FILE} has peft_type {config.get('peft_type')!r}; only LORA is served."
        )
    rank = config.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise AdapterValidationError(
            Reason.MALFORMED_CONFIG, f"{CONFIG_FILE}: 'r' must be a positive integer."
        )
    targets = config.get("target_modules")
    if not (
        isinstance(targets, str) or (isinstance(targets, list) and all(isinstance(t, str) for t in targets))
    ):
        raise AdapterValidationError(
            Reason.MALFORMED_CONFIG, f"{CONFIG_FILE}: 'target_modules' must be a list of names or a regex."
        )
    return config


def safetensors_tensor_names(weights: Path) -> list[str]:
    """Parse a safetensors header, check every tensor lies inside the file, and return the tensor names.

    Raises:
        AdapterValidationError: The header is truncated, not JSON, or points outside the file.
    """
    size = weights.stat().st_size
    with weights.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise AdapterValidationError(
                Reason.CORRUPT_WEIGHTS, f"{weights.name} is too short to be safetensors."
            )
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(MAX_HEADER_BYTES, size - 8):
            raise AdapterValidationError(
                Reason.CORRUPT_WEIGHTS, f"{weights.name} has an impossible header length."
            )
        try:
            header = json.loads(handle.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise AdapterValidationError(
                Reason.CORRUPT_WEIGHTS, f"{weights.name} header is not JSON."
            ) from err
    data_len = size - 8 - header_len
    if not isinstance(header, dict):
        raise AdapterValidationError(Reason.CORRUPT_WEIGHTS, f"{weights.name} header is not a JSON object.")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (
            isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1] <= data_len
        ):
            raise AdapterValidationError(
                Reason.CORRUPT_WEIGHTS, f"{weights.name}: tensor {name!r} lies outside the file."
            )
    return [name for name in header if name != "__metadata__"]


def _check_targets(targets: str | list[str], base: BaseModelInfo) -> tuple[str, ...]:
    if base.module_names is None:
        return (targets,) if isinstance(targets, str) else tuple(targets)
    if isinstance(targets, str):
        pattern = re.compile(targets)
        if not any(pattern.search(module) for module in base.module_names):
            raise AdapterValidationError(
                Reason.MISSING_TARGET_MODULE,
                f"target_modules regex {targets!r} matches no module of the base model.",
            )
        return (targets,)
    missing = sorted(set(targets) - base.module_names)
    if missing:
        raise AdapterValidationError(
            Reason.MISSING_TARGET_MODULE, f"target modules not in the base model: {', '.join(missing)}."
        )
    return tuple(targets)


def inspect_adapter(directory: Path, base: BaseModelInfo) -> AdapterFacts:
    """Validate an adapter directory (already resolved inside the roots) against the base model.

    Returns:
        What the engine and the catalogue need to know about it.

    Raises:
        AdapterValidationError: With the reason it is refused.
    """
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise AdapterValidationError(
            Reason.PICKLE_WEIGHTS,
            f"Pickle weights are refused ({', '.join(pickles)}); convert them to safetensors.",
        )
    config = _read_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise AdapterValidationError(Reason.MISSING_WEIGHTS, f"{WEIGHTS_FILE} is missing.")
    safetensors_tensor_names(weights)
    ranks = [config["r"], *(v for v in (config.get("rank_pattern") or {}).values() if isinstance(v, int))]
    if max(ranks) > base.max_rank:
        raise AdapterValidationError(
            Reason.RANK_TOO_LARGE,
            f"Adapter rank {max(ranks)} is above the server's --max-lora-rank {base.max_rank}.",
        )
    base_model = config.get("base_model_name_or_path")
    # A hub id and a local copy of the same model share their last path component.
    known = base.names | {PurePath(name).name for name in base.names}
    if base_model and base_model not in known and PurePath(str(base_model)).name not in known:
        raise AdapterValidationError(
            Reason.BASE_MODEL_MISMATCH,
            f"Adapter was trained on {base_model!r}, not on this server's base model "
            f"({sorted(base.names)[0]!r}).",
        )
    return AdapterFacts(
        path=directory,
        base_model=base_model,
        rank=config["r"],
        alpha=float(config.get("lora_alpha", config["r"])),
        target_modules=_check_targets(config["target_modules"], base),
        size_bytes=sum(p.stat().st_size for p in directory.iterdir() if p.is_file()),
    )
