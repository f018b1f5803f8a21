"""Schemathesis against the running server's own /openapi.json: no 5xx, and only the statuses it documents.

Generation is bounded (examples per operation; output length and `n` capped, the served model named) so
the run takes a minute or two on the real engine; the cases still cover every field and its edges. A
second run takes the generated bodies past the server's input limits (answer size, message count,
schema size, text UTF-8 cannot encode), where each must be refused as documented, never a 5xx.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.conftest import API_KEY, MODEL, Server

pytestmark = pytest.mark.e2e
EXAMPLES_PER_OPERATION = 25
CAPS = {
    "max_tokens": 8,
    "max_completion_tokens": 8,
    "max_output_tokens": 8,
    "n": 2,
    "top_logprobs": 2,
    "logprobs": 2,
}
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def map_case(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """Keep generation cheap: cap output length and choices, and ask for the served model."""
    if isinstance(case.body, dict) and case.path in CAPPED_PATHS:
        for key, cap in CAPS.items():
            value = case.body.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > cap:
                case.body[key] = cap
        if isinstance(case.body.get("model"), str):
            case.body["model"] = MODEL
        # A lone flex request waits for companions up to the flex lane's bound, past the client's timeout.
        if case.body.get("service_tier") == "flex":
            case.body["service_tier"] = "default"
        # Unset, the output length is the rest of the context: a thousand tokens per case.
        length_key = "max_output_tokens" if case.path == "/v1/responses" else "max_tokens"
        if not any(key in case.body for key in ("max_tokens", "max_completion_tokens", "max_output_tokens")):
            case.body[length_key] = CAPS[length_key]
    return case


GENERATION_PATHS = ("/v1/chat/completions", "/v1/completions")
CAPPED_PATHS = (*GENERATION_PATHS, "/v1/responses")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _first_string_field(body: dict) -> str | None:
    return next((key for key, value in body.items() if isinstance(value, str) and key != "model"), None)


def _over_answer_size(body: dict) -> None:
    body.update(n=16, max_tokens=100_000, logprobs=5 if "prompt" in body else True, top_logprobs=20)
    if "prompt" in body:
        body.pop("top_logprobs")


def _unencodable(body: dict) -> None:
    key = _first_string_field(body) or "user"
    body[key] = "caf\ud800"


def _too_many_parts(body: dict) -> None:
    if "messages" in body:
        body["messages"] = [{"role": "user", "content": ""}] * 5000
    else:
        body["prompt"] = ["x" * 200_000] * 64


def _schema_too_large(body: dict) -> None:
    if "messages" in body:
        enum = [f"v{index}" for index in range(5000)]
        schema = {"type": "object", "properties": {"a": {"enum": enum}}}
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "big", "schema": schema}}
    else:
        _over_answer_size(body)


OVER_LIMITS = (_over_answer_size, _unencodable, _too_many_parts, _schema_too_large)


def map_case_over_limits(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """Push each generated generation body past one of the input limits (chosen by the case's content)."""
    if isinstance(case.body, dict) and case.path in GENERATION_PATHS:
        case.body["model"] = MODEL
        OVER_LIMITS[len(repr(sorted(case.body))) % len(OVER_LIMITS)](case.body)
    return case


def fuzz_operations(server: Server, hook: object, paths: tuple[str, ...] | None = None) -> int:
    """Run the derandomized cases of every operation (of `paths`) through the checks; return how many ops."""
    # The pytest plugin's lazy fixture loader does not work with this pytest: each operation's
    # strategy is driven by hypothesis directly instead.
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json", headers=AUTH)
    schema.hook("map_case")(hook)
    operations = [result.ok() for result in schema.get_all_operations()]
    if paths is not None:
        operations = [operation for operation in operations if operation.path in paths]

    for operation in operations:

        @given(case=operation.as_strategy())
        # derandomize: the same cases on every run, so the suite's outcome does not depend on luck.
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=server.base_url, headers=AUTH, checks=CHECKS)

        fuzz()
    return len(operations)


def test_no_server_error_and_only_documented_statuses(server: Server) -> None:
    assert fuzz_operations(server, map_case) >= 10


def test_bodies_past_the_input_limits_are_refused_as_documented(server: Server) -> None:
    assert fuzz_operations(server, map_case_over_limits, GENERATION_PATHS) == len(GENERATION_PATHS)
