"""`--lora-modules` values: vLLM's name=path form, its JSON form, and clear errors for anything else."""

from __future__ import annotations

import pytest

from adapters.discovery import AdapterSpec, parse_lora_module


@pytest.mark.parametrize(
    ("value", "spec"),
    [
        ("sql=/adapters/sql", AdapterSpec("sql", "/adapters/sql")),
        (
            '{"name": "sql", "path": "/adapters/sql", "base_model_name": "x"}',
            AdapterSpec("sql", "/adapters/sql"),
        ),
    ],
)
def test_both_forms_parse(value: str, spec: AdapterSpec) -> None:
    assert parse_lora_module(value) == spec


@pytest.mark.parametrize(
    "value",
    ["sql", "=path", "sql=", '{"name": "sql"}', '{"path": "/a"}', '{"name": 1, "path": "/a"}', "{broken"],
)
def test_malformed_values_raise_value_error(value: str) -> None:
    with pytest.raises(ValueError, match="--lora-modules"):
        parse_lora_module(value)
