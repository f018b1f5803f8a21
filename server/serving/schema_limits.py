"""Size caps on structured-output constraints (schemas, regexes, grammars, choices), checked before compiles.

vLLM compiles every schema into a grammar on its engine's compile pool, one worker per two cores, and
never cancels a compile (`vllm/v1/structured_output/__init__.py`, `grammar_init`): a schema with tens of
thousands of enum values compiles for seconds to minutes while every later structured request waits
behind it. These caps refuse the schemas whose sheer size makes them expensive, at parse cost; the
compile deadline (`server.engine.grammar_gate`) bounds the ones that are small but still costly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from server.errors import SchemaTooLargeError


@dataclass(frozen=True)
class SchemaLimits:
    """The largest schema accepted; the defaults follow OpenAI's documented structured-output limits.

    Attributes:
        max_bytes: UTF-8 bytes of the schema serialized as vLLM serializes it.
        max_enum_values: `enum` entries over the whole schema (a `const` counts as one).
        max_properties: Object properties over the whole schema.
    """

    max_bytes: int = 256 * 1024
    max_enum_values: int = 1000
    max_properties: int = 5000


@dataclass(frozen=True)
class SchemaSize:
    """What a schema holds, in the units `SchemaLimits` caps."""

    enum_values: int
    properties: int


def measure(schema: Any) -> SchemaSize:
    """Count enum values and properties anywhere in `schema` (`$defs` included).

    Iterative, so a deeply nested schema cannot exhaust the interpreter's stack. A property named like a
    keyword may be counted twice; a cap only needs an upper estimate.
    """
    enum_values = properties = 0
    pending = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            enum = node.get("enum")
            if isinstance(enum, list):
                enum_values += len(enum)
            if "const" in node:
                enum_values += 1
            members = node.get("properties")
            if isinstance(members, dict):
                properties += len(members)
            pending.extend(value for value in node.values() if isinstance(value, dict | list))
        elif isinstance(node, list):
            pending.extend(value for value in node if isinstance(value, dict | list))
    return SchemaSize(enum_values, properties)


def check_schema_limits(schema: dict[str, Any], limits: SchemaLimits, param: str = "response_format") -> str:
    """Refuse a schema over `limits`; return it serialized as vLLM keys its grammar cache.

    Raises:
        SchemaTooLargeError: The schema is over one of the limits (400, naming `param`).
    """
    serialized = json.dumps(schema)  # vLLM's get_structured_output_key serializes with the same defaults
    size_bytes = len(serialized.encode())
    if size_bytes > limits.max_bytes:
        raise _too_large(param, f"{size_bytes} bytes", f"{limits.max_bytes} bytes", "--max-schema-bytes")
    size = measure(schema)
    if size.enum_values > limits.max_enum_values:
        raise _too_large(
            param, f"{size.enum_values} enum values", f"{limits.max_enum_values}", "--max-schema-enum-values"
        )
    if size.properties > limits.max_properties:
        raise _too_large(
            param, f"{size.properties} properties", f"{limits.max_properties}", "--max-schema-properties"
        )
    return serialized


def check_constraint_limits(constraint: str | list[str], limits: SchemaLimits, param: str) -> None:
    """Refuse a regex, grammar or choice list over a schema's caps: bytes, and choices as enum values.

    vLLM compiles these into grammars on the same pool as schemas; a choice list is an enum by another name.

    Raises:
        SchemaTooLargeError: It is over a limit (400, naming `param`).
    """
    texts = [constraint] if isinstance(constraint, str) else constraint
    size_bytes = sum(len(text.encode()) for text in texts)
    if size_bytes > limits.max_bytes:
        raise _too_large(param, f"{size_bytes} bytes", f"{limits.max_bytes} bytes", "--max-schema-bytes")
    if not isinstance(constraint, str) and len(constraint) > limits.max_enum_values:
        raise _too_large(
            param, f"{len(constraint)} choices", f"{limits.max_enum_values}", "--max-schema-enum-values"
        )


def _too_large(param: str, has: str, limit: str, flag: str) -> SchemaTooLargeError:
    return SchemaTooLargeError(
        f"{param}: holds {has}, more than this server compiles into a grammar ({limit}, see {flag}); "
        "make it smaller (split the schema, shorten its enums or choices).",
        param=param,
    )
