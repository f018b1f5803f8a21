"""Find adapter directories under a folder: each sub-folder `name` or `name@version` is one adapter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adapters.validation import CONFIG_FILE


@dataclass(frozen=True)
class AdapterSpec:
    """An adapter found on disk or named on the command line, not yet validated."""

    name: str
    path: str
    version: str | None = None


def spec_from_folder(folder: Path) -> AdapterSpec:
    """The spec a folder stands for: `name@version` gives both, a plain name no version."""
    name, _, version = folder.name.partition("@")
    return AdapterSpec(name=name, path=str(folder.resolve()), version=version or None)


def scan(directory: Path) -> list[AdapterSpec]:
    """Every sub-folder of `directory` holding an `adapter_config.json`, in name order."""
    if not directory.is_dir():
        return []
    return [
        spec_from_folder(child)
        for child in sorted(directory.iterdir())
        if child.is_dir() and (child / CONFIG_FILE).is_file()
    ]


def find(directory: Path, name: str) -> AdapterSpec | None:
    """The folder `scan` would load last as `name` (`name`, or `name@version`), if there is one.

    `name` must have passed `adapters.validation.check_name`: its alphabet holds no separator and no
    glob character, so it never points outside `directory` nor matches more than its own folders.
    """
    candidates = [directory / name, *directory.glob(f"{name}@*")]
    found = sorted(child for child in candidates if child.is_dir() and (child / CONFIG_FILE).is_file())
    return spec_from_folder(found[-1]) if found else None


# vLLM's JSON form: `base_model_name` only sets the parent its model list shows, which here is always
# the served model, so it is taken and not used.
JSON_FIELDS = frozenset({"name", "path", "base_model_name"})


def parse_lora_module(value: str) -> AdapterSpec:
    """Parse one of vLLM's `--lora-modules` forms: `name=path`, or a JSON object (`name`, `path`, ...).

    Raises:
        ValueError: Neither form, or a JSON object without string `name` and `path` or with other fields.
    """
    import json  # noqa: PLC0415

    if value.lstrip().startswith("{"):
        try:
            data = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"--lora-modules: {value!r} is not valid JSON ({err})") from err
        if not (isinstance(data.get("name"), str) and isinstance(data.get("path"), str)):
            raise ValueError(f'--lora-modules: {value!r} needs string "name" and "path" fields')
        unknown = sorted(set(data) - JSON_FIELDS)
        if unknown:
            raise ValueError(f"--lora-modules: {value!r} has fields vLLM does not take: {', '.join(unknown)}")
        return AdapterSpec(name=data["name"], path=data["path"])
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"--lora-modules expects name=path, got {value!r}")
    return AdapterSpec(name=name, path=path)
