"""Build adapter directories for the tests: new weight versions and every kind of bad adapter."""

from __future__ import annotations

import json
import math
import shutil
import struct
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


def with_non_finite_weight(source: Path, target: Path, value: float = float("nan")) -> Path:
    """Copy an adapter and put `value` (NaN by default) into one element of its first lora_B matrix."""
    copy_adapter(source, target)
    tensors = load_file(target / WEIGHTS)
    name = sorted(key for key in tensors if "lora_B" in key)[0]
    tensors[name] = tensors[name].copy()
    tensors[name].flat[0] = value
    save_file(tensors, target / WEIGHTS)
    return target


def with_files_linked_outside(source: Path, target: Path, outside: Path, file_name: str) -> Path:
    """Copy an adapter into `target`, then make its `file_name` a symlink to a copy in `outside`."""
    copy_adapter(source, target)
    outside_copy = outside / f"{target.name}-{file_name}"
    shutil.copyfile(target / file_name, outside_copy)
    (target / file_name).unlink()
    (target / file_name).symlink_to(outside_copy)
    return target


def odd_configs(good: Path, root: Path) -> dict[str, tuple[Path, str]]:
    """Adapters whose config parses (or nearly) but holds odd values: case -> (directory, reason code)."""
    cases = {
        "non-numeric lora_alpha": ({"lora_alpha": "sixteen"}, "malformed_adapter_config"),
        "NaN lora_alpha": ({"lora_alpha": float("nan")}, "malformed_adapter_config"),
        "rank_pattern as a list": ({"rank_pattern": [["q_proj", 4]]}, "malformed_adapter_config"),
        "alpha_pattern as a list": ({"alpha_pattern": [1.0]}, "malformed_adapter_config"),
        "bad target_modules regex": ({"target_modules": "(q_proj"}, "malformed_adapter_config"),
        "bad rank_pattern key regex": ({"rank_pattern": {"[": 4}}, "malformed_adapter_config"),
        "base model as a list": ({"base_model_name_or_path": ["x"]}, "malformed_adapter_config"),
        "DoRA": ({"use_dora": True}, "unsupported_lora_feature"),
    }
    built = {}
    for index, (case, (changes, reason)) in enumerate(cases.items()):
        built[case] = (edit_config(copy_adapter(good, root / f"odd-config-{index}"), **changes), reason)
    deep = copy_adapter(good, root / "odd-config-deep")
    (deep / CONFIG).write_text("[" * 100_000 + "]" * 100_000)
    built["deeply nested JSON"] = (deep, "malformed_adapter_config")
    latin1 = copy_adapter(good, root / "odd-config-latin1")
    raw = (latin1 / CONFIG).read_bytes()
    (latin1 / CONFIG).write_bytes(raw[: raw.rindex(b"}")] + b', "x": "\xe9"}')
    built["config not UTF-8"] = (latin1, "malformed_adapter_config")
    return built


def with_declared_tensor(source: Path, target: Path, shape: tuple[int, ...]) -> Path:
    """Copy an adapter and replace its weights with one F32 tensor of `shape`, in a sparse file.

    The header and the file's size are sound, so only a check of the declared shape against the base
    model can refuse it without reading every (zero) byte.
    """
    copy_adapter(source, target)
    name = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    nbytes = 4 * math.prod(shape)
    header = json.dumps({name: {"dtype": "F32", "shape": list(shape), "data_offsets": [0, nbytes]}}).encode()
    with (target / WEIGHTS).open("wb") as handle:
        handle.write(struct.pack("<Q", len(header)) + header)
        handle.truncate(8 + len(header) + nbytes)
    return target
