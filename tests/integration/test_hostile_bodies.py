"""Hostile bodies on the in-process app: each refused with a coded 400 before anything is rendered."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx
import pytest

from server.compose import create_app
from server.energy.meters.base import NullEnergyMeter
from server.engine.types import GenerationStep, PreparedPrompt
from server.settings import ServerSettings
from tests.integration.fake_engine import FakeEngine

MODEL = FakeEngine.served_model_name
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
COMPLETION = {"model": MODEL, "prompt": "hi", "max_tokens": 2}
# Small bounds, so each can be crossed with a small body.
LIMITS = {"max_prompt_chars": 40, "max_chat_messages": 4, "max_response_tokens": 100}


class CountingEngine(FakeEngine):
    """The fake engine, counting what it was asked to render and to generate."""

    def __init__(self) -> None:
        super().__init__()
        self.renders = 0
        self.generations = 0

    def generate(self, *args: Any, **kwargs: Any) -> AsyncIterator[GenerationStep]:
        self.generations += 1
        return super().generate(*args, **kwargs)

    async def render_chat(
        self, messages: Sequence[dict[str, str]], template_kwargs: Mapping[str, Any] | None = None
    ) -> PreparedPrompt:
        self.renders += 1
        return await super().render_chat(messages, template_kwargs)

    async def render_completion(self, prompt: str | list[int]) -> PreparedPrompt:
        self.renders += 1
        return await super().render_completion(prompt)


@pytest.fixture
def engine() -> CountingEngine:
    return CountingEngine()


@pytest.fixture
async def http(engine: CountingEngine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ServerSettings(api_key="k", **LIMITS), lambda: engine, meter=NullEnergyMeter())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers={"Authorization": "Bearer k"}
        ) as client:
            yield client


async def post(http: httpx.AsyncClient, path: str, body: dict) -> httpx.Response:
    # json.dumps escapes lone surrogates as `\ud800`, valid JSON, as a hostile client would send them.
    return await http.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})


def refused(response: httpx.Response, code: str, param: str) -> str:
    """Assert a coded 400 in OpenAI's format, its body valid UTF-8 JSON; return its message."""
    assert response.status_code == 400, response.text
    error = json.loads(response.content.decode("utf-8"))["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    return error["message"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {**CHAT, "stop": "\ud800"}, "stop"),
        ("/v1/chat/completions", {**CHAT, "stop": "\ud800", "stream": True}, "stop"),
        ("/v1/completions", {**COMPLETION, "stop": ["x", "\udc00"]}, "stop.1"),
        ("/v1/completions", {**COMPLETION, "prompt": ["ok", "b\ud83d"]}, "prompt.1"),
        ("/v1/chat/completions", {**CHAT, "model": "\ud800"}, "model"),
        ("/v1/chat/completions", {**CHAT, "user": "\ud800"}, "user"),
        (
            "/v1/chat/completions",
            {**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]},
            "messages.0.content.0.text",
        ),
        (
            "/v1/chat/completions",
            {
                **CHAT,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "s", "schema": {"enum": ["ok", "\udfff"]}},
                },
            },
            "response_format.json_schema.schema.enum.1",
        ),
        ("/v1/chat/completions", {**CHAT, "\ud800": 1}, "\\ud800"),
        ("/v1/unload_lora_adapter", {"lora_name": "\ud800"}, "lora_name"),
        ("/v1/load_lora_adapter", {"lora_name": "a", "lora_path": "/x/\udc80"}, "lora_path"),
        ("/v1/adapters", {"name": "a\ud800", "path": "/x"}, "name"),
    ],
)
async def test_unencodable_text_in_any_field_of_any_body_is_a_coded_400(
    http: httpx.AsyncClient, engine: CountingEngine, path: str, body: dict, param: str
) -> None:
    message = refused(await post(http, path, body), "invalid_encoding", param)
    assert "U+D" in message
    assert (engine.renders, engine.generations) == (0, 0)


async def test_raw_surrogate_bytes_are_refused_as_the_escape_is(http: httpx.AsyncClient) -> None:
    # Encoded surrogates (CESU-style bytes) are decoded leniently by the JSON parser into the same text.
    raw = json.dumps({**CHAT, "stop": "STOP"}).encode().replace(b"STOP", b"\xed\xa0\x80")
    response = await http.post(
        "/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"}
    )
    refused(response, "invalid_encoding", "stop")


async def test_valid_unicode_is_served(http: httpx.AsyncClient) -> None:
    body = {**CHAT, "messages": [{"role": "user", "content": "héllo 😀"}], "stop": ["✓"]}
    assert (await post(http, "/v1/chat/completions", body)).status_code == 200


async def test_a_chat_of_too_many_messages_is_refused_before_rendering(
    http: httpx.AsyncClient, engine: CountingEngine
) -> None:
    body = {**CHAT, "messages": [{"role": "user", "content": ""}] * 5}
    message = refused(await post(http, "/v1/chat/completions", body), "array_above_max_length", "messages")
    assert "--max-chat-messages" in message
    assert engine.renders == 0
    body = {**CHAT, "messages": [{"role": "user", "content": ""}] * 4}
    assert (await post(http, "/v1/chat/completions", body)).status_code == 200


@pytest.mark.parametrize(
    "message",
    [
        {"role": "user", "content": "x" * 37},  # 4 + 37 characters: content alone is under 40
        {"role": "user", "content": "x" * 20, "name": "n" * 17},
        {"role": "user", "content": [{"type": "text", "text": "x" * 20}, {"type": "text", "text": "y" * 17}]},
    ],
)
async def test_every_chat_field_counts_toward_the_character_bound(
    http: httpx.AsyncClient, engine: CountingEngine, message: dict
) -> None:
    response = await post(http, "/v1/chat/completions", {**CHAT, "messages": [message]})
    assert "--max-prompt-chars" in refused(response, "context_length_exceeded", "messages")
    assert engine.renders == 0


async def test_a_completions_prompts_are_counted_together(
    http: httpx.AsyncClient, engine: CountingEngine
) -> None:
    ok = await post(http, "/v1/completions", {**COMPLETION, "prompt": ["x" * 20, "y" * 20]})
    assert ok.status_code == 200
    renders = engine.renders
    response = await post(http, "/v1/completions", {**COMPLETION, "prompt": ["x" * 20, "y" * 21]})
    refused(response, "context_length_exceeded", "prompt")
    assert engine.renders == renders


@pytest.mark.parametrize(
    ("path", "extra", "param"),
    [
        ("/v1/chat/completions", {"max_tokens": 101}, "max_tokens"),
        ("/v1/chat/completions", {"max_completion_tokens": 101}, "max_completion_tokens"),
        ("/v1/chat/completions", {"max_tokens": 40, "n": 3, "temperature": 1}, "n"),
        ("/v1/chat/completions", {"max_tokens": 30, "logprobs": True, "top_logprobs": 3}, "top_logprobs"),
        ("/v1/completions", {"max_tokens": 30, "logprobs": 3}, "logprobs"),
        ("/v1/completions", {"max_tokens": 30, "prompt": ["a", "b", "c", "d"]}, "prompt"),
        ("/v1/completions", {"max_tokens": 30, "n": 4, "temperature": 1, "stream": True}, "n"),
    ],
)
async def test_an_answer_over_the_response_cap_is_refused_before_the_engine_runs(
    http: httpx.AsyncClient, engine: CountingEngine, path: str, extra: dict, param: str
) -> None:
    # The fake engine's context is 64 tokens: 101 fits no prompt, so make its context roomy for this.
    engine.max_model_len = 4096
    body = {**(CHAT if path.endswith("chat/completions") else COMPLETION), **extra}
    message = refused(await post(http, path, body), "response_too_large", param)
    assert "--max-response-tokens" in message
    assert engine.generations == 0


async def test_an_answer_at_the_response_cap_is_served(http: httpx.AsyncClient) -> None:
    body = {**CHAT, "max_tokens": 10, "n": 2, "temperature": 1, "logprobs": True, "top_logprobs": 4}
    assert (await post(http, "/v1/chat/completions", body)).status_code == 200
