"""Size caps on response_format schemas: what is counted, what is refused, and how it is worded."""

from __future__ import annotations

import json

import pytest

from server.errors import SchemaTooLargeError
from server.serving.schema_limits import SchemaLimits, SchemaSize, check_schema_limits, measure


def enum_schema(count: int) -> dict:
    values = [f"e{i}" for i in range(count)]
    return {"type": "object", "properties": {"v": {"type": "string", "enum": values}}}


def test_enum_values_and_properties_are_counted_everywhere_defs_included() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"enum": [1, 2, 3]}, "b": {"const": "x"}, "c": {"$ref": "#/$defs/d"}},
        "$defs": {"d": {"type": "object", "properties": {"e": {"enum": ["y", "z"]}}}},
        "anyOf": [{"properties": {"f": {"type": "integer"}}}],
    }
    assert measure(schema) == SchemaSize(enum_values=6, properties=5)


def test_a_schema_nested_past_the_interpreters_stack_is_measured() -> None:
    schema: dict = {"type": "string"}
    for _ in range(5000):
        schema = {"type": "array", "items": schema}
    assert measure(schema) == SchemaSize(enum_values=0, properties=0)


def test_a_schema_within_the_limits_comes_back_serialized_as_vllm_keys_it() -> None:
    schema = enum_schema(10)
    assert check_schema_limits(schema, SchemaLimits()) == json.dumps(schema)


@pytest.mark.parametrize(
    ("schema", "limits", "flag"),
    [
        (enum_schema(1001), SchemaLimits(), "--max-schema-enum-values"),
        (enum_schema(3), SchemaLimits(max_enum_values=2), "--max-schema-enum-values"),
        (
            {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(11)}},
            SchemaLimits(max_properties=10),
            "--max-schema-properties",
        ),
        ({"description": "x" * 2000}, SchemaLimits(max_bytes=1024), "--max-schema-bytes"),
    ],
)
def test_a_schema_over_a_limit_is_refused_naming_response_format_and_the_flag(
    schema: dict, limits: SchemaLimits, flag: str
) -> None:
    with pytest.raises(SchemaTooLargeError) as refused:
        check_schema_limits(schema, limits)
    assert refused.value.param == "response_format"
    assert refused.value.code == "response_format_too_large"
    assert refused.value.status == 400
    assert flag in refused.value.message


def test_a_schema_exactly_at_every_limit_passes() -> None:
    schema = enum_schema(4)
    size_bytes = len(json.dumps(schema).encode())
    check_schema_limits(schema, SchemaLimits(max_bytes=size_bytes, max_enum_values=4, max_properties=1))
