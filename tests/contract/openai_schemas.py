"""Validators for OpenAI's response schemas, from the pinned subset of its OpenAPI document.

OpenAI's document says OpenAPI 3.1 (JSON Schema 2020-12) but still marks some fields with 3.0's
`nullable: true`, which JSON Schema ignores; those become "this schema, or null" before validating.
Properties a schema does not name stay allowed, as OpenAI's schemas allow them: wattserve adds its own
(`usage.energy`, vLLM's fields), and a client built from OpenAI's SDK ignores them.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.contract.trim_openapi import SCHEMA_REF_PREFIX, SUBSET_PATH

DOCUMENT_URI = "urn:openai-openapi-subset"

# OpenAI's document has no schema of its own for a streamed legacy completion chunk: it says chunks
# share CreateCompletionResponse. But a chunk before the last has no finish reason yet, and with
# stream_options its usage is null until the last chunk, as OpenAI's own streams send them and as the
# chat chunk schema spells out. This schema, ours, is CreateCompletionResponse with just those two
# fields nullable; everything else is OpenAI's.
COMPLETION_CHUNK = "CompletionStreamChunk"


def completion_chunk_schema(completion: dict[str, Any]) -> dict[str, Any]:
    chunk = copy.deepcopy(completion)
    chunk["properties"]["usage"]["nullable"] = True
    chunk["properties"]["choices"]["items"]["properties"]["finish_reason"]["nullable"] = True
    return chunk


def nullable_as_json_schema(node: Any) -> Any:
    """Rewrites every `nullable: true` schema, at any depth, to `anyOf: [schema, null]`."""
    if isinstance(node, list):
        return [nullable_as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: nullable_as_json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


@cache
def schemas() -> dict[str, Any]:
    """The pinned component schemas plus the completion chunk, in JSON Schema's terms."""
    pinned = json.loads(SUBSET_PATH.read_text())["components"]["schemas"]
    derived = {COMPLETION_CHUNK: completion_chunk_schema(pinned["CreateCompletionResponse"])}
    return nullable_as_json_schema({**pinned, **derived})


@cache
def registry() -> Registry:
    document = {"components": {"schemas": schemas()}}
    return Registry().with_resource(DOCUMENT_URI, Resource.from_contents(document, DRAFT202012))


@cache
def validator(schema_name: str) -> Draft202012Validator:
    if schema_name not in schemas():
        raise KeyError(f"{schema_name} is not in the pinned subset; add it to trim_openapi.ROOT_SCHEMAS")
    schema = {"$ref": f"{DOCUMENT_URI}{SCHEMA_REF_PREFIX}{schema_name}"}
    return Draft202012Validator(schema, registry=registry())


def violations(schema_name: str, instance: object) -> list[str]:
    """Every way `instance` breaks the schema, one line each; empty when it is valid.

    A value of the wrong type also fails its enum; only the type is reported then.
    """
    errors = [innermost(error) for error in validator(schema_name).iter_errors(instance)]
    mistyped = {error.json_path for error in errors if error.validator == "type"}
    return [
        describe(error) for error in errors if error.validator != "enum" or error.json_path not in mistyped
    ]


def innermost(error: ValidationError) -> ValidationError:
    """For "none of anyOf matched", the branch that came closest: `null` alternatives say nothing."""
    while error.context:
        branches = [branch for branch in error.context if branch.validator_value != "null"]
        error = best_match(branches or error.context)
    return error


def describe(error: ValidationError) -> str:
    rule = "/".join(str(part) for part in error.absolute_schema_path)
    return f"{error.json_path}: {error.message} (rule {rule})"
