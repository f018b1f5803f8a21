"""Adapter validation on generated adapter folders: every refusal reason, and a good adapter's facts."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from adapters.errors import AdapterValidationError, Reason
from adapters.validation import (
    BaseModelInfo,
    check_name,
    check_not_reserved,
    inspect_adapter,
    resolve_within_roots,
    validate_adapter,
)

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
    facts = inspect_adapter(
        write_adapter(tmp_path / "a", base_model_name_or_path="meta-llama/Llama-3.1-8B"), base
    )
    assert facts.warnings == ()


def test_another_base_model_name_is_a_warning_not_a_refusal(tmp_path: Path) -> None:
    # vLLM checks shapes, not names: a re-served copy of the same weights differs in name alone.
    facts = inspect_adapter(write_adapter(tmp_path / "a", base_model_name_or_path="other/model"), BASE)
    assert len(facts.warnings) == 1
    assert "'other/model'" in facts.warnings[0]


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


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"lora_alpha": "sixteen"}, Reason.MALFORMED_CONFIG),
        ({"lora_alpha": float("nan")}, Reason.MALFORMED_CONFIG),
        ({"lora_alpha": float("inf")}, Reason.MALFORMED_CONFIG),
        ({"lora_alpha": 10**400}, Reason.MALFORMED_CONFIG),
        ({"lora_alpha": True}, Reason.MALFORMED_CONFIG),
        ({"r": True}, Reason.MALFORMED_CONFIG),
        ({"r": 8.0}, Reason.MALFORMED_CONFIG),
        ({"rank_pattern": [["q_proj", 4]]}, Reason.MALFORMED_CONFIG),
        ({"rank_pattern": {"q_proj": "4"}}, Reason.MALFORMED_CONFIG),
        ({"rank_pattern": {"(": 4}}, Reason.MALFORMED_CONFIG),
        ({"alpha_pattern": [1, 2]}, Reason.MALFORMED_CONFIG),
        ({"alpha_pattern": {"q_proj": None}}, Reason.MALFORMED_CONFIG),
        ({"target_modules": "(unclosed"}, Reason.MALFORMED_CONFIG),
        ({"target_modules": ["q_proj", 7]}, Reason.MALFORMED_CONFIG),
        ({"target_modules": {"q_proj": 1}}, Reason.MALFORMED_CONFIG),
        ({"target_modules": ["q_proj", "\ud800"]}, Reason.MALFORMED_CONFIG),
        ({"base_model_name_or_path": ["tiny"]}, Reason.MALFORMED_CONFIG),
        ({"peft_type": ["LORA"]}, Reason.NOT_LORA),
        ({"use_dora": True}, Reason.UNSUPPORTED_FEATURE),
        ({"bias": "all"}, Reason.UNSUPPORTED_FEATURE),
        ({"modules_to_save": ["lm_head"]}, Reason.UNSUPPORTED_FEATURE),
        ({"init_lora_weights": "pissa"}, Reason.UNSUPPORTED_FEATURE),
    ],
)
def test_odd_but_parseable_configs_are_refused_with_a_reason(
    tmp_path: Path, config: dict, expected: Reason
) -> None:
    assert reason(write_adapter(tmp_path / "a", **config)) is expected


def test_missing_lora_alpha_is_malformed(tmp_path: Path) -> None:
    directory = write_adapter(tmp_path / "a")
    config = json.loads((directory / "adapter_config.json").read_text())
    del config["lora_alpha"]
    (directory / "adapter_config.json").write_text(json.dumps(config))
    assert reason(directory) is Reason.MALFORMED_CONFIG


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"peft_type": "LORA", "r": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"peft_type": "LORA", "r": 8, "x": "\xff\xfe"}',
        b'{"r": ' + b"9" * 5000 + b"}",
        b"\xef\xbb\xbf{}",
        b" " * (2**20 + 1),
    ],
    ids=["deep-list", "deep-field", "not-utf8", "huge-int", "bom", "over-1mib"],
)
def test_hostile_config_files_are_malformed(tmp_path: Path, content: bytes) -> None:
    directory = write_adapter(tmp_path / "a")
    (directory / "adapter_config.json").write_bytes(content)
    assert reason(directory) is Reason.MALFORMED_CONFIG


def test_config_that_is_not_a_regular_file(tmp_path: Path) -> None:
    directory = write_adapter(tmp_path / "a")
    (directory / "adapter_config.json").unlink()
    (directory / "adapter_config.json").mkdir()
    assert reason(directory) is Reason.BAD_PATH
    (directory / "adapter_config.json").rmdir()
    os.mkfifo(directory / "adapter_config.json")  # reading it would block for ever
    assert reason(directory) is Reason.BAD_PATH


@pytest.mark.parametrize("linked", ["adapter_config.json", "adapter_model.safetensors"])
def test_files_symlinked_outside_the_roots_are_refused(tmp_path: Path, linked: str) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    source = write_adapter(outside / "source")
    directory = write_adapter(root / "a")
    (directory / linked).unlink()
    (directory / linked).symlink_to(source / linked)
    with pytest.raises(AdapterValidationError) as caught:
        validate_adapter(str(directory), BASE, [root])
    assert caught.value.reason is Reason.SYMLINK_ESCAPE
    # The same link is fine when its target lies in an allowed root.
    assert validate_adapter(str(directory), BASE, [root, outside]).path == directory.resolve()


def write_weights(directory: Path, tensors: dict[str, torch.Tensor]) -> Path:
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    return directory


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused(tmp_path: Path, dtype: torch.dtype, bad: float) -> None:
    weights = torch.zeros(4, 8, dtype=dtype)
    weights[2, 3] = bad
    directory = write_weights(
        write_adapter(tmp_path / "a"), {"a.lora_A.weight": torch.ones(8, 4, dtype=dtype)}
    )
    assert inspect_adapter(directory, BASE).rank == 8
    write_weights(directory, {"a.lora_A.weight": torch.ones(8, 4, dtype=dtype), "a.lora_B.weight": weights})
    assert reason(directory) is Reason.NON_FINITE_WEIGHTS


def test_integer_tensors_are_not_checked_for_finiteness(tmp_path: Path) -> None:
    directory = write_weights(
        write_adapter(tmp_path / "a"), {"steps": torch.tensor([2**31 - 1], dtype=torch.int32)}
    )
    inspect_adapter(directory, BASE)


@pytest.mark.parametrize(
    "header",
    [
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": ["0", "8"]}},
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, True]}},
        {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
        {"a": {"dtype": "NOPE", "shape": [2], "data_offsets": [0, 8]}},
        {"a": [0, 8]},
    ],
)
def test_headers_the_library_refuses_are_corrupt(tmp_path: Path, header: dict) -> None:
    directory = write_adapter(tmp_path / "a")
    raw = json.dumps(header).encode()
    (directory / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(8))
    assert reason(directory) is Reason.CORRUPT_WEIGHTS


def test_deeply_nested_safetensors_header_is_corrupt(tmp_path: Path) -> None:
    directory = write_adapter(tmp_path / "a")
    raw = b"[" * 100_000 + b"]" * 100_000
    (directory / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    assert reason(directory) is Reason.CORRUPT_WEIGHTS


@pytest.mark.parametrize(
    "raw",
    ["", "~nonexistentuser-wattserve/x", "a\x00b", "x" * 300, "/" + "d/" * 3000, "bad-\ud800"],
    ids=["empty", "unknown-user", "nul", "long-name", "long-path", "surrogate"],
)
def test_paths_the_filesystem_cannot_take_are_bad(tmp_path: Path, raw: str) -> None:
    with pytest.raises(AdapterValidationError) as caught:
        resolve_within_roots(raw, [tmp_path])
    assert caught.value.reason is Reason.BAD_PATH


def test_home_directory_paths_are_checked_like_any_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    write_adapter(tmp_path / "home" / "x")
    with pytest.raises(AdapterValidationError) as caught:
        resolve_within_roots("~/x", [tmp_path / "root"])
    assert caught.value.reason is Reason.OUTSIDE_ROOTS
    assert resolve_within_roots("~/x", [tmp_path / "home"]) == (tmp_path / "home" / "x").resolve()


def test_symlink_loop_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(AdapterValidationError) as caught:
        resolve_within_roots(str(tmp_path / "loop"), [tmp_path])
    assert caught.value.reason is Reason.PATH_NOT_FOUND


def test_the_base_model_names_are_reserved() -> None:
    with pytest.raises(AdapterValidationError) as caught:
        check_not_reserved("tiny", BASE)
    assert caught.value.reason is Reason.RESERVED_NAME
    assert check_not_reserved("tiny-2", BASE) == "tiny-2"
