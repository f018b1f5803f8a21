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


def parse_lora_module(value: str) -> AdapterSpec:
    """Parse vLLM's `--lora-modules name=path` form (a JSON object with `name` and `path` is accepted too).

    Raises:
        ValueError: Neither form, or a JSON object without string `name` and `path`.
    """
    import json  # noqa: PLC0415

    if value.lstrip().startswith("{"):
        try:
            data = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"--lora-modules: {value!r} is not valid JSON ({err})") from err
        if not (isinstance(data.get("name"), str) and isinstance(data.get("path"), str)):
            raise ValueError(f'--lora-modules: {value!r} needs string "name" and "path" fields')
        return AdapterSpec(name=data["name"], path=data["path"])
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"--lora-modules expects name=path, got {value!r}")
    return AdapterSpec(name=name, path=path)
