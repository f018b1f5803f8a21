"""Properties of an answer that its OpenAI schema does not name, found by walking the schema beside it.

OpenAI's schemas leave unnamed properties allowed, so a misspelt optional field passes validation; this
finds every such property, so a test can allow exactly the extensions wattserve means to send. Where a
schema offers alternatives (`anyOf`, `oneOf`), an object takes the one its `type` names, as OpenAI's
discriminators do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tests.contract.openai_schemas import schemas
from tests.contract.trim_openapi import SCHEMA_REF_PREFIX

JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}


def undocumented(schema_name: str, instance: object) -> list[str]:
    """The JSON path of every property in `instance`, at any depth, that its schema does not name.

    Objects whose schema names no properties (maps, free-form JSON such as a tool's parameters) are
    data, not fields: their keys are never reported. Below an unnamed property nothing is reported.
    """
    found: list[str] = []
    _walk({"$ref": SCHEMA_REF_PREFIX + schema_name}, instance, "$", found)
    return found


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schemas()[node["$ref"].removeprefix(SCHEMA_REF_PREFIX)]
    return node


def _json_type(instance: object) -> str:
    if isinstance(instance, bool):
        return "boolean"
    if isinstance(instance, int | float):
        return "number"
    return JSON_TYPES[type(instance)]


def _admits(node: dict[str, Any], instance: object) -> bool:
    declared = _resolve(node).get("type")
    if declared is None:
        return True
    kind = _json_type(instance)
    return declared == kind or (declared == "integer" and kind == "number")


def _type_names(node: dict[str, Any]) -> set[str]:
    """The `type` values an object schema (with its `allOf` members) allows."""
    node = _resolve(node)
    names = set(node.get("properties", {}).get("type", {}).get("enum", ()))
    for member in node.get("allOf", ()):
        names |= _type_names(member)
    return names


def _chosen(members: list[dict[str, Any]], instance: object) -> dict[str, Any] | None:
    candidates = [member for member in members if _admits(member, instance)]
    if isinstance(instance, dict) and "type" in instance:
        named = [member for member in candidates if instance["type"] in _type_names(member)]
        candidates = named or candidates
    return candidates[0] if candidates else None


def _applying(node: dict[str, Any], instance: object) -> Iterator[dict[str, Any]]:
    """The schema and each subschema that applies to `instance`: `allOf` members, the chosen alternative."""
    node = _resolve(node)
    yield node
    for member in node.get("allOf", ()):
        yield from _applying(member, instance)
    for alternatives in ("anyOf", "oneOf"):
        chosen = _chosen(node.get(alternatives, []), instance)
        if chosen is not None:
            yield from _applying(chosen, instance)


def _walk(node: dict[str, Any], instance: object, path: str, found: list[str]) -> None:
    applying = list(_applying(node, instance))
    if isinstance(instance, dict):
        named = {key: sub for schema in applying for key, sub in schema.get("properties", {}).items()}
        free_form = not named or any(
            schema.get("additionalProperties", False) is not False for schema in applying
        )
        for key, value in instance.items():
            if key in named:
                _walk(named[key], value, f"{path}.{key}", found)
            elif not free_form:
                found.append(f"{path}.{key}")
    elif isinstance(instance, list):
        items = next((schema["items"] for schema in applying if "items" in schema), None)
        for index, value in enumerate(instance if items is not None else ()):
            _walk(items, value, f"{path}[{index}]", found)
