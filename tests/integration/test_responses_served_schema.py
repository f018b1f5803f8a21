"""What `/v1/responses` actually sends, body and every stream event, against OpenAI's published schemas.

The answers' models are checked one by one in test_responses_schema.py; here the server builds them from
generation (plain text, a function call, reasoning, a cut answer, a queued background response), and
each is checked as it arrives: required fields, types, enums, and no property OpenAI's schema does not
name but wattserve's own extensions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from server import responses_answers
from tests.contract.openai_schemas import violations
from tests.contract.undocumented_properties import undocumented
from tests.integration.fake_engine import FakeEngine
from tests.integration.test_responses import MODEL, WEATHER
from tests.integration.test_responses_schema import EXTENSIONS

EVENT_SCHEMAS = {
    cls.model_fields["type"].default: name
    for name, cls in vars(responses_answers).items()
    if isinstance(cls, type) and name.endswith("Event") and "type" in getattr(cls, "model_fields", {})
}
NAMED_CALL = {"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_weather"}}
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "text": ({"script": "Hello there."}, {}),
    "function-call": ({"script": '{"city": "Oslo"}'}, NAMED_CALL),
    "reasoning": ({"script": "<think>Hm.</think>Sunny.", "reasoning_parser": "deepseek_r1"}, {}),
    "incomplete": ({}, {"max_output_tokens": 3}),
    "background": ({"script": "Later."}, {"background": True}),
}


def problems(schema: str, instance: dict[str, Any]) -> list[str]:
    extra = [f"unnamed {path}" for path in undocumented(schema, instance) if path not in EXTENSIONS]
    return violations(schema, instance) + extra


# A background response is polled, not streamed.
RUNS = [
    (case, stream)
    for case in sorted(CASES)
    for stream in (False, True)
    if not (stream and case == "background")
]


@pytest.mark.parametrize(("case", "stream"), RUNS)
async def test_served_responses_and_events_match_openais_schemas(
    tmp_path: Path, case: str, stream: bool
) -> None:
    from tests.integration.test_responses import client  # noqa: PLC0415 - the module's app fixture

    engine_options, fields = CASES[case]
    async with client(FakeEngine(**engine_options), tmp_path) as api:
        body = {"model": MODEL, "input": "Weather?", **fields, "stream": stream}
        raw = await api.with_options(base_url="http://test/").post(
            "v1/responses", body=body, cast_to=httpx.Response
        )
    assert raw.status_code == 200, raw.text
    found: list[str] = []
    if not stream:
        found = problems("Response", raw.json())
    else:
        data = [line[6:] for line in raw.text.splitlines() if line.startswith("data: ")]
        events = [json.loads(payload) for payload in data if payload != "[DONE]"]
        assert events
        for event in events:
            found += [
                f"{event['type']}: {problem}" for problem in problems(EVENT_SCHEMAS[event["type"]], event)
            ]
    assert found == []
