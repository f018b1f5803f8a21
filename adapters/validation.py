"""Check an adapter directory before the engine sees it: name, path, files, config, weights, base model."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from adapters.errors import AdapterValidationError, Reason
from adapters.peft_config import CONFIG_FILE, LoraConfig, parse_lora_config
from adapters.shapes import ModuleShapes, check_declared_tensors
from adapters.types import AdapterFacts
from adapters.weights import check_finite, safetensors_header

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
WEIGHTS_FILE = "adapter_model.safetensors"
# Pickle-based formats can run code when loaded; only safetensors is accepted.
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
# A LoRA config is a few hundred bytes; a bound keeps a hostile file from filling memory.
MAX_CONFIG_BYTES = 2**20


@dataclass(frozen=True)
class BaseModelInfo:
    """What an adapter is checked against."""

    names: frozenset[str]  # identifiers of the base model an adapter's config may name
    module_names: frozenset[str] | None  # leaf module names (q_proj, ...); None when unknown
    max_rank: int
    module_shapes: ModuleShapes | None = None  # each leaf module's weight shapes; None when unknown


def _shown(text: str) -> str:
    """`text` quoted for an error message: escaped (repr) and cut, since it may be anything."""
    return repr(text[:200]) + ("..." if len(text) > 200 else "")


def check_name(name: str, what: str = "adapter name") -> str:
    """Refuse names that could not be a `model` value or a folder name (spaces, slashes, ...)."""
    if not NAME_PATTERN.fullmatch(name):
        raise AdapterValidationError(
            Reason.BAD_NAME,
            f"Invalid {what} {_shown(name)}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit.",
        )
    return name


def check_not_reserved(name: str, base: BaseModelInfo) -> str:
    """Refuse a name the base model answers to: requests for it would never reach the adapter."""
    if name in base.names:
        raise AdapterValidationError(
            Reason.RESERVED_NAME, f"The name {_shown(name)} is the base model's; choose another adapter name."
        )
    return name


def check_version(version: str) -> str:
    """Refuse version labels with characters outside the name alphabet."""
    if not VERSION_PATTERN.fullmatch(version):
        raise AdapterValidationError(Reason.BAD_NAME, f"Invalid adapter version {_shown(version)}.")
    return version


def _bad_path(raw_path: str, why: str) -> AdapterValidationError:
    return AdapterValidationError(Reason.BAD_PATH, f"Adapter path {_shown(raw_path)} {why}.")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _real_roots(roots: Sequence[Path]) -> list[Path]:
    real = []
    for root in roots:
        try:
            real.append(root.resolve())
        except (OSError, RuntimeError):  # a root that cannot be resolved admits nothing
            continue
    return real


def resolve_within_roots(raw_path: str, roots: Sequence[Path]) -> Path:
    """Resolve `raw_path` and check it lies inside one of `roots`, symlinks followed.

    Raises:
        AdapterValidationError: `..` in the path, a path the filesystem cannot take (NUL byte, not
            UTF-8, too long, unknown `~user`), no such directory, or outside every root.
    """
    if not raw_path:
        raise _bad_path(raw_path, "is empty")
    if "\x00" in raw_path:
        raise _bad_path(raw_path, "contains a NUL byte")
    if not _utf8(raw_path):
        raise _bad_path(raw_path, "is not valid Unicode text")
    if ".." in PurePath(raw_path).parts:
        raise AdapterValidationError(
            Reason.PARENT_REFERENCE, f"Adapter path {_shown(raw_path)} must not contain '..'."
        )
    try:
        path = Path(raw_path).expanduser()
    except (RuntimeError, KeyError) as err:  # `~name` for a user this machine does not have
        raise _bad_path(raw_path, "names the home directory of an unknown user") from err
    try:
        if not path.is_dir():
            raise AdapterValidationError(
                Reason.PATH_NOT_FOUND, f"Adapter directory {_shown(raw_path)} does not exist."
            )
        resolved = path.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError) as err:  # it vanished between the two calls
        raise AdapterValidationError(
            Reason.PATH_NOT_FOUND, f"Adapter directory {_shown(raw_path)} does not exist."
        ) from err
    except (OSError, RuntimeError) as err:  # too long, permission denied, symlink loop
        raise _bad_path(raw_path, f"cannot be used ({getattr(err, 'strerror', None) or err})") from err
    if not _utf8(str(resolved)):
        raise _bad_path(raw_path, "leads to a directory whose name is not valid UTF-8")
    real_roots = _real_roots(roots)
    if any(resolved.is_relative_to(root) for root in real_roots):
        return resolved
    lexical = Path.cwd() / path if not path.is_absolute() else path
    if any(lexical.is_relative_to(root) for root in [*roots, *real_roots]):
        raise AdapterValidationError(
            Reason.SYMLINK_ESCAPE,
            f"Adapter path {_shown(raw_path)} is a symlink that leads outside the allowed roots.",
        )
    raise AdapterValidationError(
        Reason.OUTSIDE_ROOTS,
        f"Adapter path {_shown(raw_path)} is outside the allowed adapter roots "
        f"({', '.join(map(str, roots)) or 'none'}).",
    )


def _resolve_file(directory: Path, name: str, real_roots: list[Path]) -> tuple[Path, int] | None:
    """The real path and size of a file that will be read, checked against the roots; None if absent.

    A file inside an allowed directory may itself be a symlink to anywhere, so each file is resolved
    on its own. (Checked once: whoever can write inside a root can still swap a file afterwards.)
    """
    try:
        resolved = (directory / name).resolve(strict=True)
        info = resolved.stat()
    except FileNotFoundError:
        return None
    except (OSError, RuntimeError) as err:
        message = f"{name} cannot be read ({getattr(err, 'strerror', None) or err})."
        raise AdapterValidationError(Reason.BAD_PATH, message) from err
    if not any(resolved.is_relative_to(root) for root in real_roots):
        raise AdapterValidationError(
            Reason.SYMLINK_ESCAPE, f"{name} is a symlink that leads outside the allowed roots."
        )
    if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block or never end
        raise AdapterValidationError(Reason.BAD_PATH, f"{name} is not a regular file.")
    return resolved, info.st_size


def _read_config(path: Path, size: int) -> LoraConfig:
    if size > MAX_CONFIG_BYTES:
        raise AdapterValidationError(Reason.MALFORMED_CONFIG, f"{CONFIG_FILE} is larger than 1 MiB.")
    try:
        text = path.read_bytes().decode("utf-8")  # vLLM reads it as UTF-8 text
        config = json.loads(text)
    except OSError as err:
        raise AdapterValidationError(
            Reason.BAD_PATH, f"{CONFIG_FILE} cannot be read ({err.strerror or err})."
        ) from err
    except (ValueError, RecursionError) as err:  # not UTF-8, not JSON, or nested past the parser
        raise AdapterValidationError(
            Reason.MALFORMED_CONFIG, f"{CONFIG_FILE} is not valid JSON: {str(err)[:200]}"
        ) from err
    return parse_lora_config(config)


def _base_model_warnings(config: LoraConfig, base: BaseModelInfo) -> tuple[str, ...]:
    """A warning when the config names another base model; a warning only, as vLLM does.

    The name is a hint (a renamed or re-served copy of the same weights differs in name alone); whether
    the adapter fits is decided by its shapes, target modules and rank.
    """
    # A hub id and a local copy of the same model share their last path component.
    known = base.names | {PurePath(name).name for name in base.names}
    if config.base_model and config.base_model not in known and PurePath(config.base_model).name not in known:
        return (
            f"adapter_config.json names {_shown(config.base_model)} as its base model, not this server's "
            f"({sorted(base.names)[0]!r}); it was loaded because its shapes fit.",
        )
    return ()


def _check_targets(targets: str | tuple[str, ...], base: BaseModelInfo) -> tuple[str, ...]:
    if base.module_names is None:
        return (targets,) if isinstance(targets, str) else targets
    if isinstance(targets, str):
        pattern = re.compile(targets)  # compiled once already by parse_lora_config
        if not any(pattern.search(module) for module in base.module_names):
            raise AdapterValidationError(
                Reason.MISSING_TARGET_MODULE,
                f"target_modules regex {_shown(targets)} matches no module of the base model.",
            )
        return (targets,)
    missing = sorted(set(targets) - base.module_names)
    if missing:
        raise AdapterValidationError(
            Reason.MISSING_TARGET_MODULE,
            f"target modules not in the base model: {', '.join(map(_shown, missing[:10]))}.",
        )
    return targets


def inspect_adapter(
    directory: Path, base: BaseModelInfo, roots: Sequence[Path] | None = None
) -> AdapterFacts:
    """Validate an adapter directory (already resolved inside the roots) against the base model.

    Args:
        directory: The adapter's directory, as `resolve_within_roots` returned it.
        base: What the adapter must fit.
        roots: Where the files read may lie once symlinks are followed; the directory itself if None.

    Returns:
        What the engine and the catalogue need to know about it.

    Raises:
        AdapterValidationError: With the reason it is refused.
    """
    real_roots = _real_roots(roots if roots is not None else [directory])
    try:
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    except OSError as err:
        raise AdapterValidationError(
            Reason.BAD_PATH, f"The adapter directory cannot be listed ({err.strerror or err})."
        ) from err
    if pickles:
        raise AdapterValidationError(
            Reason.PICKLE_WEIGHTS,
            f"Pickle weights are refused ({', '.join(map(_shown, pickles[:10]))}); "
            "convert them to safetensors.",
        )
    config_file = _resolve_file(directory, CONFIG_FILE, real_roots)
    if config_file is None:
        raise AdapterValidationError(Reason.MALFORMED_CONFIG, f"{CONFIG_FILE} is missing.")
    config = _read_config(*config_file)
    weights_file = _resolve_file(directory, WEIGHTS_FILE, real_roots)
    if weights_file is None:
        raise AdapterValidationError(Reason.MISSING_WEIGHTS, f"{WEIGHTS_FILE} is missing.")
    declared = safetensors_header(weights_file[0])
    if config.max_rank > base.max_rank:
        raise AdapterValidationError(
            Reason.RANK_TOO_LARGE,
            f"Adapter rank {config.max_rank} is above the server's --max-lora-rank {base.max_rank}.",
        )
    targets = _check_targets(config.target_modules, base)
    if base.module_shapes is not None:
        check_declared_tensors(declared, config.max_rank, base.module_shapes)
    # Last: it reads every weight, the one check whose cost grows with the adapter.
    check_finite(weights_file[0])
    return AdapterFacts(
        path=directory,
        base_model=config.base_model,
        rank=config.rank,
        alpha=config.alpha,
        target_modules=targets,
        size_bytes=config_file[1] + weights_file[1],
        warnings=_base_model_warnings(config, base),
    )


def validate_adapter(raw_path: str, base: BaseModelInfo, roots: Sequence[Path]) -> AdapterFacts:
    """Resolve `raw_path` inside `roots` and validate the adapter there (blocking: run it in a thread).

    Raises:
        AdapterValidationError: With the reason it is refused.
    """
    return inspect_adapter(resolve_within_roots(raw_path, roots), base, roots)
