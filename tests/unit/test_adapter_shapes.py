"""Declared tensors checked against the base model's modules from the header alone."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from adapters import validation
from adapters.errors import AdapterValidationError, Reason
from adapters.shapes import check_declared_tensors
from adapters.validation import BaseModelInfo, inspect_adapter
from adapters.weights import TensorEntry, safetensors_header

HIDDEN, FFN, VOCAB = 256, 512, 1024
MODULES = {
    "q_proj": [(HIDDEN, HIDDEN)] * 2,
    "up_proj": [(FFN, HIDDEN)] * 2,
    "embed_tokens": [(VOCAB, HIDDEN)],
    "input_layernorm": [(HIDDEN,)] * 2,
}
PREFIX = "base_model.model.model.layers.0"


def lora(module: str, part: str, shape: tuple[int, ...]) -> TensorEntry:
    return TensorEntry(f"{PREFIX}.self_attn.{module}.{part}.weight", "F32", shape)


def refusal(entries: list[TensorEntry], max_rank: int = 8) -> str:
    with pytest.raises(AdapterValidationError) as caught:
        check_declared_tensors(entries, max_rank, MODULES)
    assert caught.value.reason is Reason.WEIGHT_SHAPE_MISMATCH
    return caught.value.message


def test_lora_pairs_of_every_kind_fit() -> None:
    check_declared_tensors(
        [
            lora("q_proj", "lora_A", (8, HIDDEN)),
            lora("q_proj", "lora_B", (HIDDEN, 8)),
            lora("up_proj", "lora_A", (4, HIDDEN)),
            lora("up_proj", "lora_B", (FFN, 4)),
            TensorEntry("base_model.model.model.embed_tokens.lora_embedding_A", "F32", (8, VOCAB)),
            TensorEntry("base_model.model.model.embed_tokens.lora_embedding_B", "F32", (HIDDEN, 8)),
            lora("q_proj", "lora_magnitude_vector", (HIDDEN,)),
        ],
        8,
        MODULES,
    )


def test_a_giant_dimension_is_refused() -> None:
    assert "67108864" in refusal([lora("q_proj", "lora_A", (8, 2**26))])


def test_a_rank_above_the_adapters_is_refused() -> None:
    assert "rank 16" in refusal([lora("q_proj", "lora_B", (HIDDEN, 16))])


def test_a_module_the_base_lacks_is_refused() -> None:
    assert "'gate_proj'" in refusal([lora("gate_proj", "lora_A", (8, HIDDEN))])


def test_a_whole_module_keeps_the_base_dimensions() -> None:
    check_declared_tensors(
        [TensorEntry("base_model.model.lm.up_proj.weight", "F32", (FFN, HIDDEN))], 8, MODULES
    )
    assert "shape" in refusal([TensorEntry("base_model.model.lm.up_proj.weight", "F32", (FFN, FFN * 8))])


def test_more_tensors_than_the_base_has_instances_are_refused() -> None:
    """The names may differ, but a module carries at most three tensors per instance in the base."""
    entries = [TensorEntry(f"x{i}.q_proj.lora_A.weight", "F32", (8, HIDDEN)) for i in range(6)]
    check_declared_tensors(entries, 8, MODULES)
    assert "one tensor too many" in refusal(
        [*entries, TensorEntry("x6.q_proj.lora_A.weight", "F32", (8, HIDDEN))]
    )


def write_weights(path: Path, tensors: dict[str, dict]) -> Path:
    header = json.dumps(tensors).encode()
    data_len = max((info["data_offsets"][1] for info in tensors.values()), default=0)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(header)) + header)
        handle.truncate(8 + len(header) + data_len)  # sparse: nothing is written
    return path


def test_a_byte_range_that_does_not_match_dtype_and_shape_is_corrupt(tmp_path: Path) -> None:
    path = write_weights(
        tmp_path / "w.safetensors", {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}
    )
    with pytest.raises(AdapterValidationError) as caught:
        safetensors_header(path)
    assert caught.value.reason is Reason.CORRUPT_WEIGHTS
    assert "takes 16" in caught.value.message


def test_inspect_refuses_from_the_header_without_reading_the_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2 GiB tensor declared in a sparse file: refused before any weight is read."""
    directory = tmp_path / "giant"
    directory.mkdir()
    config = {
        "peft_type": "LORA",
        "r": 8,
        "lora_alpha": 16,
        "target_modules": ["q_proj"],
        "base_model_name_or_path": "tiny",
    }
    (directory / "adapter_config.json").write_text(json.dumps(config))
    nbytes = 4 * 8 * 2**26
    name = f"{PREFIX}.self_attn.q_proj.lora_A.weight"
    write_weights(
        directory / "adapter_model.safetensors",
        {name: {"dtype": "F32", "shape": [8, 2**26], "data_offsets": [0, nbytes]}},
    )
    read: list[Path] = []
    monkeypatch.setattr(validation, "check_finite", read.append)
    base = BaseModelInfo(frozenset({"tiny"}), frozenset(MODULES), 8, MODULES)
    with pytest.raises(AdapterValidationError) as caught:
        inspect_adapter(directory, base)
    assert caught.value.reason is Reason.WEIGHT_SHAPE_MISMATCH
    assert read == []
    # Without the base's shapes (a hub id) the header check cannot judge shapes, and the read goes on.
    inspect_adapter(directory, BaseModelInfo(frozenset({"tiny"}), frozenset(MODULES), 8))
    assert read == [directory / "adapter_model.safetensors"]
