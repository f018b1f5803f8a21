"""Any JSON as an adapter config, any text as an adapter path: validation refuses with a reason or accepts.

Nothing else may come out: any other exception would reach the HTTP layer as a 500.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from adapters.errors import AdapterValidationError
from adapters.peft_config import LoraConfig, parse_lora_config
from adapters.validation import BaseModelInfo, inspect_adapter, resolve_within_roots
from tests.unit.test_adapter_validation import write_adapter

BASE = BaseModelInfo(frozenset({"tiny"}), frozenset({"q_proj", "v_proj"}), 8)
# Every character, lone surrogates and NUL included.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | ANY_TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)
FIELDS = [
    "peft_type",
    "r",
    "lora_alpha",
    "target_modules",
    "rank_pattern",
    "alpha_pattern",
    "base_model_name_or_path",
    "bias",
    "use_dora",
    "modules_to_save",
    "init_lora_weights",
]
GOOD = {
    "peft_type": "LORA",
    "r": 8,
    "lora_alpha": 16,
    "target_modules": ["q_proj", "v_proj"],
    "base_model_name_or_path": "tiny",
}
# Start from a good config and replace a few fields with anything, so checks deep in the list run too.
NEAR_GOOD = st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=3).map(
    lambda changes: {**GOOD, **changes}
)


def assert_servable(config: LoraConfig) -> None:
    """What the catalogue hands to the HTTP layer and to vLLM must encode and make sense."""
    assert isinstance(config.rank, int)
    assert config.rank >= 1
    assert config.max_rank >= config.rank
    assert math.isfinite(config.alpha)
    wire = {"alpha": config.alpha, "targets": config.target_modules, "base": config.base_model}
    json.dumps(wire, ensure_ascii=False, allow_nan=False).encode("utf-8")


@settings(max_examples=400, deadline=None)
@given(config=JSON | NEAR_GOOD)
@example(config={**GOOD, "lora_alpha": "x"})
@example(config={**GOOD, "rank_pattern": []})
@example(config={**GOOD, "target_modules": "("})
def test_any_json_config_is_refused_with_a_reason_or_accepted(config: object) -> None:
    try:
        parsed = parse_lora_config(config)
    except AdapterValidationError as err:
        err.message.encode("utf-8")
        return
    assert_servable(parsed)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.binary(max_size=300) | JSON.map(lambda value: json.dumps(value).encode()))
def test_any_config_file_is_refused_with_a_reason_or_accepted(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = write_adapter(Path(tmp) / "a")
        (directory / "adapter_config.json").write_bytes(content)
        try:
            inspect_adapter(directory, BASE)
        except AdapterValidationError as err:
            err.message.encode("utf-8")


PATHS = st.one_of(
    ANY_TEXT,
    st.tuples(st.sampled_from(["~", "~root/", "~nobody-here/", "/", "./", "", "\x00"]), ANY_TEXT).map(
        "".join
    ),
    st.integers(200, 5000).map(lambda n: "x" * n),
)


@settings(max_examples=400, deadline=None)
@given(raw=PATHS)
def test_any_path_is_refused_with_a_reason_or_lies_in_a_root(raw: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp).resolve()
        (root / "adapter").mkdir()
        try:
            resolved = resolve_within_roots(raw, [root])
        except AdapterValidationError as err:
            err.message.encode("utf-8")
            return
        assert resolved.is_relative_to(root)
        str(resolved).encode("utf-8")
