"""Adapter validation on generated adapter folders: every refusal reason, and a good adapter's facts."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from adapters.errors import AdapterValidationError, Reason
from adapters.validation import BaseModelInfo, check_name, inspect_adapter, resolve_within_roots

BASE = BaseModelInfo(frozenset({"tiny", "/models/tiny"}), frozenset({"q_proj", "v_proj", "o_proj"}), 8)


def write_adapter(directory: Path, **config: object) -> Path:
    directory.mkdir(parents=True)
    settings = {
        "peft_type": "LORA",
        "r": 8,
        "lora_alpha": 16,
        "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": "tiny",
        **config,
    }
    (directory / "adapter_config.json").write_text(json.dumps(settings))
    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    (directory / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    return directory


def reason(directory: Path, base: BaseModelInfo = BASE) -> Reason:
    with pytest.raises(AdapterValidationError) as caught:
        inspect_adapter(directory, base)
    return caught.value.reason


def test_good_adapter_facts(tmp_path: Path) -> None:
    facts = inspect_adapter(write_adapter(tmp_path / "good"), BASE)
    assert (facts.rank, facts.alpha, facts.target_modules, facts.base_model) == (
        8,
        16.0,
        ("q_proj", "v_proj"),
        "tiny",
    )
    assert facts.size_bytes > 0


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"r": 16}, Reason.RANK_TOO_LARGE),
        ({"rank_pattern": {"q_proj": 32}}, Reason.RANK_TOO_LARGE),
        ({"base_model_name_or_path": "other/model"}, Reason.BASE_MODEL_MISMATCH),
        ({"target_modules": ["q_proj", "gate_proj"]}, Reason.MISSING_TARGET_MODULE),
        ({"target_modules": ".*mlp.*"}, Reason.MISSING_TARGET_MODULE),
        ({"peft_type": "IA3"}, Reason.NOT_LORA),
        ({"r": "eight"}, Reason.MALFORMED_CONFIG),
    ],
)
def test_config_refusals(tmp_path: Path, config: dict, expected: Reason) -> None:
    assert reason(write_adapter(tmp_path / "a", **config)) is expected


def test_hub_id_matches_a_local_copy_by_its_last_component(tmp_path: Path) -> None:
    base = BaseModelInfo(frozenset({"/models/Llama-3.1-8B"}), None, 8)
    inspect_adapter(write_adapter(tmp_path / "a", base_model_name_or_path="meta-llama/Llama-3.1-8B"), base)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x01", Reason.CORRUPT_WEIGHTS),
        (struct.pack("<Q", 10**12) + b"{}", Reason.CORRUPT_WEIGHTS),
        (struct.pack("<Q", 4) + b"nope", Reason.CORRUPT_WEIGHTS),
    ],
)
def test_corrupt_safetensors(tmp_path: Path, payload: bytes, expected: Reason) -> None:
    directory = write_adapter(tmp_path / "a")
    (directory / "adapter_model.safetensors").write_bytes(payload)
    assert reason(directory) is expected


def test_tensor_outside_the_file_is_corrupt(tmp_path: Path) -> None:
    directory = write_adapter(tmp_path / "a")
    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 800]}}).encode()
    (directory / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    assert reason(directory) is Reason.CORRUPT_WEIGHTS


def test_pickle_and_missing_weights(tmp_path: Path) -> None:
    pickled = write_adapter(tmp_path / "p")
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04")
    assert reason(pickled) is Reason.PICKLE_WEIGHTS
    missing = write_adapter(tmp_path / "m")
    (missing / "adapter_model.safetensors").unlink()
    assert reason(missing) is Reason.MISSING_WEIGHTS


def test_malformed_or_missing_config(tmp_path: Path) -> None:
    directory = write_adapter(tmp_path / "a")
    (directory / "adapter_config.json").write_text("[1, 2")
    assert reason(directory) is Reason.MALFORMED_CONFIG
    (directory / "adapter_config.json").unlink()
    assert reason(directory) is Reason.MALFORMED_CONFIG


def test_paths_must_stay_inside_the_roots(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    inside = write_adapter(root / "ok")
    write_adapter(outside / "x")
    (root / "link").symlink_to(outside / "x")
    assert resolve_within_roots(str(inside), [root]) == inside.resolve()
    cases = {
        str(root / "none"): Reason.PATH_NOT_FOUND,
        str(outside / "x"): Reason.OUTSIDE_ROOTS,
        str(root / "link"): Reason.SYMLINK_ESCAPE,
        f"{root}/../outside/x": Reason.PARENT_REFERENCE,
    }
    for raw, expected in cases.items():
        with pytest.raises(AdapterValidationError) as caught:
            resolve_within_roots(raw, [root])
        assert caught.value.reason is expected, raw


@pytest.mark.parametrize("name", ["has space", "a/b", "", "../x", "-lead", "x" * 129])
def test_bad_names(name: str) -> None:
    with pytest.raises(AdapterValidationError):
        check_name(name)
