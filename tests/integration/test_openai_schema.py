"""Every response body and stream chunk wattserve answers with, against OpenAI's published schemas.

The schemas are a pinned subset of OpenAI's OpenAPI document (tests/contract). Fields wattserve or vLLM
add are allowed, as OpenAI's schemas allow them; a missing required field, a wrong type or a value
outside an enum fails, naming the shape, the chunk and the rule.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from server.compose import create_app
from server.energy.meters.base import NullEnergyMeter
from server.engine.types import GenerationStep, PreparedPrompt, SamplingSpec, TokenLogprob
from server.settings import ServerSettings
from tests.contract.openai_schemas import COMPLETION_CHUNK, violations
from tests.contract.trim_openapi import ROOT_SCHEMAS, SUBSET_PATH, referenced_closure
from tests.integration.fake_engine import FakeEngine

MODEL = FakeEngine.served_model_name
MESSAGES = [{"role": "user", "content": "a b"}]
CHAT = {"model": MODEL, "messages": MESSAGES, "max_tokens": 3}
COMPLETION = {"model": MODEL, "prompt": "a b", "max_tokens": 3}
INCLUDE_USAGE = {"include_usage": True}

Chunk = dict[str, object]
Select = Callable[[list[Chunk]], list[Chunk]]


class LogprobEngine(FakeEngine):
    """The fake engine, plus made-up logprobs whenever a request asks for them."""

    async def generate(
        self, prompt: PreparedPrompt, spec: SamplingSpec, request_id: str, **options: object
    ) -> AsyncIterator[GenerationStep]:
        async for step in super().generate(prompt, spec, request_id, **options):
            if spec.logprobs is not None:
                for delta in step.deltas:
                    top = [(delta.text, -0.25), ("other ", -1.5)][: spec.logprobs]
                    delta.logprobs = [TokenLogprob(delta.text, -0.25, top)]
            yield step


def whole(chunks: list[Chunk]) -> list[Chunk]:
    return chunks


def choices_of(chunk: Chunk) -> list[dict]:
    return chunk.get("choices") or []  # type: ignore[return-value]


def role_chunks(chunks: list[Chunk]) -> list[Chunk]:
    return [chunk for chunk in chunks if any(c.get("delta", {}).get("role") for c in choices_of(chunk))]


def content_chunks(chunks: list[Chunk]) -> list[Chunk]:
    return [
        chunk
        for chunk in chunks
        if any(
            c.get("delta", {}).get("content") and c.get("finish_reason") is None for c in choices_of(chunk)
        )
    ]


def finish_chunks(chunks: list[Chunk]) -> list[Chunk]:
    return [chunk for chunk in chunks if any(c.get("finish_reason") for c in choices_of(chunk))]


def choice_chunks(chunks: list[Chunk]) -> list[Chunk]:
    return [chunk for chunk in chunks if choices_of(chunk)]


def usage_only_chunks(chunks: list[Chunk]) -> list[Chunk]:
    return [chunk for chunk in chunks if not choices_of(chunk) and chunk.get("usage")]


@dataclass(frozen=True)
class Shape:
    """One answer wattserve gives: how to ask for it, which schema it claims, which objects to check."""

    id: str
    schema: str
    path: str
    body: dict[str, object] | None = None  # None: a GET
    status: int = 200
    select: Select | None = None  # a stream: the chunks this shape is about
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def request(self) -> dict[str, object] | None:
        return None if self.body is None else {**self.body, **self.extra}


CHAT_CHUNK = "CreateChatCompletionStreamResponse"
STREAMED = {"stream": True}

SHAPES = [
    Shape("chat", "CreateChatCompletionResponse", "/v1/chat/completions", CHAT),
    Shape(
        "chat-logprobs",
        "CreateChatCompletionResponse",
        "/v1/chat/completions",
        CHAT,
        extra={"logprobs": True, "top_logprobs": 2},
    ),
    Shape(
        "chat-stream-role-chunk", CHAT_CHUNK, "/v1/chat/completions", CHAT, select=role_chunks, extra=STREAMED
    ),
    Shape(
        "chat-stream-content-chunk",
        CHAT_CHUNK,
        "/v1/chat/completions",
        CHAT,
        select=content_chunks,
        extra=STREAMED,
    ),
    Shape(
        "chat-stream-finish-chunk",
        CHAT_CHUNK,
        "/v1/chat/completions",
        CHAT,
        select=finish_chunks,
        extra=STREAMED,
    ),
    Shape(
        "chat-stream-usage-chunk",
        CHAT_CHUNK,
        "/v1/chat/completions",
        CHAT,
        select=usage_only_chunks,
        extra={**STREAMED, "stream_options": INCLUDE_USAGE},
    ),
    Shape(
        "chat-stream-n2",
        CHAT_CHUNK,
        "/v1/chat/completions",
        CHAT,
        select=whole,
        extra={**STREAMED, "n": 2, "temperature": 1.0},
    ),
    Shape(
        "chat-stream-continuous-usage",
        CHAT_CHUNK,
        "/v1/chat/completions",
        CHAT,
        select=whole,
        extra={**STREAMED, "stream_options": {**INCLUDE_USAGE, "continuous_usage_stats": True}},
    ),
    Shape("completion", "CreateCompletionResponse", "/v1/completions", COMPLETION),
    Shape(
        "completion-logprobs",
        "CreateCompletionResponse",
        "/v1/completions",
        COMPLETION,
        extra={"logprobs": 2},
    ),
    # OpenAI's completion chunks share the non-streamed schema, less its non-null finish reason and usage.
    Shape(
        "completion-stream-chunk",
        COMPLETION_CHUNK,
        "/v1/completions",
        COMPLETION,
        select=choice_chunks,
        extra=STREAMED,
    ),
    Shape(
        "completion-stream-usage-chunk",
        COMPLETION_CHUNK,
        "/v1/completions",
        COMPLETION,
        select=usage_only_chunks,
        extra={**STREAMED, "stream_options": INCLUDE_USAGE},
    ),
    Shape("models-list", "ListModelsResponse", "/v1/models"),
    Shape("model-card", "Model", f"/v1/models/{MODEL}"),
    Shape(
        "error-400-bad-field",
        "ErrorResponse",
        "/v1/chat/completions",
        CHAT,
        status=400,
        extra={"max_tokens": "many"},
    ),
    Shape(
        "error-404-unknown-model",
        "ErrorResponse",
        "/v1/chat/completions",
        CHAT,
        status=404,
        extra={"model": "no-such-model"},
    ),
]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ServerSettings(), LogprobEngine, meter=NullEnergyMeter())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def stream_chunks(text: str) -> list[Chunk]:
    """Each `data:` event's JSON, in order; the closing `[DONE]` is no chunk."""
    payloads = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    return [json.loads(payload) for payload in payloads if payload != "[DONE]"]


async def answer(http: httpx.AsyncClient, shape: Shape) -> httpx.Response:
    if shape.request is None:
        return await http.get(shape.path)
    return await http.post(shape.path, json=shape.request)


@pytest.mark.parametrize("shape", SHAPES, ids=[shape.id for shape in SHAPES])
async def test_the_shape_matches_openais_schema(http: httpx.AsyncClient, shape: Shape) -> None:
    response = await answer(http, shape)
    assert response.status_code == shape.status, response.text
    if shape.select is None:
        checked = {"body": response.json()}
    else:
        chunks = stream_chunks(response.text)
        selected = shape.select(chunks)
        assert selected, f"no chunk of this shape in the stream:\n{response.text}"
        checked = {f"chunk {chunks.index(chunk)}": chunk for chunk in selected}
    if "logprobs" in shape.extra:  # null logprobs would pass without their schema checking anything
        assert all(choice["logprobs"] for instance in checked.values() for choice in instance["choices"])
    # The same break in several chunks is one line, naming them all.
    broken: dict[str, list[str]] = {}
    for name, instance in checked.items():
        for problem in violations(shape.schema, instance):
            broken.setdefault(problem, []).append(name)
    report = [f"{', '.join(names)}: {problem}" for problem, names in broken.items()]
    assert not report, f"{shape.id} breaks {shape.schema}:\n" + "\n".join(report)


def test_the_pinned_subset_holds_every_schema_it_references() -> None:
    schemas = json.loads(SUBSET_PATH.read_text())["components"]["schemas"]
    assert referenced_closure(schemas, ROOT_SCHEMAS) == sorted(schemas)


def test_the_validator_allows_extras_and_nulls_and_rejects_missing_fields_wrong_types_and_enums() -> None:
    error = {"message": "m", "type": "invalid_request_error", "param": None, "code": None}
    assert violations("ErrorResponse", {"error": {**error, "extra": 1}, "also": True}) == []
    missing = violations("ErrorResponse", {"error": {"message": "m", "type": "t"}})
    assert any("'param' is a required property" in line for line in missing)
    card = {"id": MODEL, "object": "model", "created": 1, "owned_by": "wattserve"}
    assert violations("Model", card) == []
    assert any("'models' is not one of" in line for line in violations("Model", {**card, "object": "models"}))
    assert any("is not of type 'integer'" in line for line in violations("Model", {**card, "created": "1"}))
    # OpenAPI 3.0's `nullable: true`, still in OpenAI's document, lets a chunk's usage be null.
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": MODEL, "choices": []}
    assert violations(CHAT_CHUNK, {**chunk, "usage": None}) == []
    assert violations(CHAT_CHUNK, {**chunk, "usage": {"prompt_tokens": 1}}) != []
