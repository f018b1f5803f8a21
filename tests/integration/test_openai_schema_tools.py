"""Tool-call and reasoning answers, against OpenAI's published schemas (the pinned subset in tests/contract).

The body and every chunk of a stream are checked: messages with `tool_calls`, the chunks that carry a
call's pieces, finish reasons `tool_calls` and `stop`, and usage with `completion_tokens_details`.
`reasoning` is vLLM's extra field, which OpenAI's schemas allow as they allow any extra.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.contract.openai_schemas import violations
from tests.integration.fake_engine import FakeEngine
from tests.integration.test_openai_schema import stream_chunks
from tests.integration.test_tool_calls import ASK, HERMES_CALL, TIME, WEATHER, serving

REQUIRED_CALLS = (
    '[{"name": "get_weather", "parameters": {"city": "Oslo"}}, {"name": "get_time", "parameters": {}}]'
)
CASES = {
    "required": (
        FakeEngine,
        {"script": REQUIRED_CALLS},
        {"tools": [WEATHER, TIME], "tool_choice": "required"},
    ),
    "named": (
        FakeEngine,
        {"script": '{"city": "Oslo"}'},
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
    ),
    "auto-hermes": (FakeEngine, {"script": HERMES_CALL, "tool_call_parser": "hermes"}, {"tools": [WEATHER]}),
    "reasoning": (
        FakeEngine,
        {"script": "<think>Hm.</think>Sunny.", "reasoning_parser": "deepseek_r1"},
        {},
    ),
}


def _check(schema: str, instances: dict[str, Any]) -> list[str]:
    return [
        f"{name}: {problem}"
        for name, instance in instances.items()
        for problem in violations(schema, instance)
    ]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("stream", [False, True])
async def test_tool_and_reasoning_answers_match_openais_schemas(case: str, stream: bool) -> None:
    engine_type, engine_options, fields = CASES[case]
    body: dict[str, Any] = {"model": FakeEngine.served_model_name, "messages": ASK, **fields}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    async with serving(engine_type(**engine_options)) as http:
        answer = await http.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    if not stream:
        message = answer.json()["choices"][0]["message"]
        assert message.get("tool_calls") or message.get("reasoning")  # the shape under test is there
        assert _check("CreateChatCompletionResponse", {"body": answer.json()}) == []
        return
    chunks = stream_chunks(answer.text)
    pieces = [
        c
        for c in chunks
        if c["choices"]
        and (c["choices"][0]["delta"].get("tool_calls") or c["choices"][0]["delta"].get("reasoning"))
    ]
    assert pieces
    assert _check("CreateChatCompletionStreamResponse", {f"chunk {i}": c for i, c in enumerate(chunks)}) == []
