"""Schemathesis against the running server's own /openapi.json: no 5xx, and only the statuses it documents.

Generation is bounded (examples per operation; output length and `n` capped, the served model named) so
the run takes a minute or two on the real engine; the cases still cover every field and its edges.
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
CAPS = {"max_tokens": 8, "max_completion_tokens": 8, "n": 2, "top_logprobs": 2, "logprobs": 2}
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def map_case(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """Keep generation cheap: cap output length and choices, and ask for the served model."""
    if isinstance(case.body, dict) and case.path in ("/v1/chat/completions", "/v1/completions"):
        for key, cap in CAPS.items():
            value = case.body.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > cap:
                case.body[key] = cap
        if isinstance(case.body.get("model"), str):
            case.body["model"] = MODEL
    return case


def test_no_server_error_and_only_documented_statuses(server: Server) -> None:
    # The pytest plugin's lazy fixture loader does not work with this pytest: each operation's
    # strategy is driven by hypothesis directly instead.
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json", headers=AUTH)
    schema.hook(map_case)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10

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
            case.call_and_validate(base_url=server.base_url, headers=AUTH, checks=checks)

        fuzz()
