"""Build adapter directories for the tests: new weight versions and every kind of bad adapter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.numpy import load_file, save_file

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


def copy_adapter(source: Path, target: Path, *, scale: float = 1.0) -> Path:
    """Copy an adapter; a `scale` other than 1 scales its B matrices, so its delta (B·A) changes."""
    shutil.copytree(source, target)
    if scale != 1.0:
        tensors = load_file(target / WEIGHTS)
        for name, value in tensors.items():
            if "lora_B" in name:
                tensors[name] = (value * scale).astype(value.dtype)
        save_file(tensors, target / WEIGHTS)
    return target


def edit_config(directory: Path, **changes: object) -> Path:
    """Change fields of an adapter's config."""
    config = json.loads((directory / CONFIG).read_text())
    config.update(changes)
    (directory / CONFIG).write_text(json.dumps(config))
    return directory


def bad_adapters(good: Path, root: Path, outside: Path) -> dict[str, tuple[str, str, str]]:
    """Every kind of bad adapter: case -> (name, path to load, reason code expected)."""
    outside_copy = copy_adapter(good, outside / "elsewhere")
    cases: dict[str, tuple[str, str, str]] = {
        "missing path": ("bad1", str(root / "does-not-exist"), "path_not_found"),
        "outside roots": ("bad2", str(outside_copy), "outside_allowed_roots"),
        "dot-dot": ("bad3", f"{root}/../{outside.name}/elsewhere", "parent_reference"),
    }
    link = root / "escape"
    link.symlink_to(outside_copy, target_is_directory=True)
    cases["symlink escape"] = ("bad4", str(link), "symlink_escape")

    pickled = copy_adapter(good, root / "pickled")
    (pickled / WEIGHTS).rename(pickled / "adapter_model.bin")
    cases["pickle weights"] = ("bad5", str(pickled), "pickle_weights_refused")

    corrupt = copy_adapter(good, root / "corrupt")
    (corrupt / WEIGHTS).write_bytes((10**9).to_bytes(8, "little") + b"{not a header")
    cases["corrupt safetensors header"] = ("bad6", str(corrupt), "corrupt_safetensors")

    cases["rank above max"] = (
        "bad7",
        str(edit_config(copy_adapter(good, root / "rank64"), r=64)),
        "rank_above_max",
    )
    cases["other base model"] = (
        "bad8",
        str(
            edit_config(
                copy_adapter(good, root / "otherbase"), base_model_name_or_path="meta-llama/Llama-3.1-8B"
            )
        ),
        "base_model_mismatch",
    )
    cases["missing target module"] = (
        "bad9",
        str(
            edit_config(copy_adapter(good, root / "notarget"), target_modules=["q_proj", "frobnicator_proj"])
        ),
        "missing_target_module",
    )
    malformed = copy_adapter(good, root / "malformed")
    (malformed / CONFIG).write_text("{not json")
    cases["malformed adapter_config.json"] = ("bad10", str(malformed), "malformed_adapter_config")
    cases["name with spaces"] = ("bad name", str(root / "v1"), "bad_name")
    cases["name with slashes"] = ("team/adapter", str(root / "v1"), "bad_name")
    return cases
