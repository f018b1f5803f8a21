"""Trims OpenAI's OpenAPI document to the response schemas wattserve is checked against.

The full document is several megabytes and changes weekly; the test pins only the component schemas
named in `ROOT_SCHEMAS` and everything they reference, so a refresh shows up as a readable diff.

    git --git-dir=<openai-openapi clone> show HEAD:openapi.json > /tmp/openapi.json
    python -m tests.contract.trim_openapi /tmp/openapi.json --commit <that HEAD's id>
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SOURCE_REPOSITORY = "github.com/openai/openai-openapi"
SUBSET_PATH = Path(__file__).with_name("openai_openapi_subset.json")
SCHEMA_REF_PREFIX = "#/components/schemas/"
SCHEMA_REF = re.compile(r'"\$ref":\s*"#/components/schemas/([^"]+)"')

# The response bodies and stream chunks wattserve answers with, under OpenAI's names.
ROOT_SCHEMAS = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
    "CompletionUsage",
    # The Responses API: the response object, and each stream event the server sends.
    "Response",
    "ResponseCreatedEvent",
    "ResponseInProgressEvent",
    "ResponseOutputItemAddedEvent",
    "ResponseContentPartAddedEvent",
    "ResponseTextDeltaEvent",
    "ResponseTextDoneEvent",
    "ResponseContentPartDoneEvent",
    "ResponseOutputItemDoneEvent",
    "ResponseFunctionCallArgumentsDeltaEvent",
    "ResponseFunctionCallArgumentsDoneEvent",
    "ResponseReasoningTextDeltaEvent",
    "ResponseReasoningTextDoneEvent",
    "ResponseCompletedEvent",
    "ResponseIncompleteEvent",
    "ResponseFailedEvent",
    "ResponseErrorEvent",
)


def referenced_closure(schemas: dict[str, Any], roots: Iterable[str]) -> list[str]:
    """The roots and every schema they reference, transitively, in a stable order."""
    found: set[str] = set()
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in found:
            continue
        if name not in schemas:
            raise KeyError(f"{name} is not a component schema of this document; was it renamed?")
        found.add(name)
        pending.extend(SCHEMA_REF.findall(json.dumps(schemas[name])))
    return sorted(found)


def without_extensions(node: Any) -> Any:
    """The schema minus `x-` vendor extensions: they carry doc examples and SDK hints, never a rule."""
    if isinstance(node, dict):
        return {key: without_extensions(value) for key, value in node.items() if not key.startswith("x-")}
    if isinstance(node, list):
        return [without_extensions(item) for item in node]
    return node


def trimmed(spec: dict[str, Any], source_path: str, commit: str) -> dict[str, Any]:
    schemas = spec["components"]["schemas"]
    names = referenced_closure(schemas, ROOT_SCHEMAS)
    return {
        "note": (
            f"Trimmed from {SOURCE_REPOSITORY}, {source_path} at commit {commit}: only the component "
            f"schemas wattserve's responses are validated against ({', '.join(ROOT_SCHEMAS)}) and what "
            "they reference, vendor extensions (x-*) removed. "
            "Regenerate with python -m tests.contract.trim_openapi."
        ),
        "source": {"repository": SOURCE_REPOSITORY, "path": source_path, "commit": commit},
        "openapi": spec["openapi"],
        "info": {"title": spec["info"]["title"], "version": spec["info"]["version"]},
        "components": {"schemas": {name: without_extensions(schemas[name]) for name in names}},
    }


def load_spec(path: Path) -> dict[str, Any]:
    if path.suffix in {".yaml", ".yml"}:
        import yaml  # noqa: PLC0415 - only the YAML form needs it

        return yaml.safe_load(path.read_text())
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="OpenAI's openapi.json (or openapi.yaml)")
    parser.add_argument("--commit", required=True, help="the openai-openapi commit the spec was taken from")
    parser.add_argument("--source-path", default="openapi.json", help="the spec's path in that repository")
    parser.add_argument("--output", type=Path, default=SUBSET_PATH)
    args = parser.parse_args(argv)
    subset = trimmed(load_spec(args.spec), args.source_path, args.commit)
    args.output.write_text(json.dumps(subset, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.write(f"{args.output}: {len(subset['components']['schemas'])} schemas\n")


if __name__ == "__main__":
    main()
