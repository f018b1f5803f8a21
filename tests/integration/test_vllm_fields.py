"""The request fields `vllm serve` accepts beyond OpenAI's core set, through the app to a fake engine.

Each accepted field must reach the sampling spec or the chat render as vLLM passes it; each one the
server cannot honour is a coded 400 naming the field.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from server.compose import create_app
from server.energy.meters.base import NullEnergyMeter
from server.settings import ServerSettings
from tests.integration.fake_engine import FakeEngine

MODEL = FakeEngine.served_model_name
MESSAGES = [{"role": "user", "content": "a b"}]


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def http(engine: FakeEngine) -> AsyncIterator[httpx.AsyncClient]:
    settings = ServerSettings(max_schema_enum_values=10, max_schema_bytes=4096)
    app = create_app(settings, lambda: engine, meter=NullEnergyMeter())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def chat(http: httpx.AsyncClient, **fields: object) -> httpx.Response:
    return await http.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, "max_tokens": 2, **fields}
    )


async def complete(http: httpx.AsyncClient, **fields: object) -> httpx.Response:
    return await http.post(
        "/v1/completions", json={"model": MODEL, "prompt": "a b", "max_tokens": 2, **fields}
    )


def error(response: httpx.Response) -> tuple[str | None, str | None]:
    assert response.status_code == 400, response.text
    body = response.json()["error"]
    return body["param"], body["code"]


async def test_sampling_extensions_reach_the_spec(http: httpx.AsyncClient, engine: FakeEngine) -> None:
    fields = {"skip_special_tokens": False, "include_stop_str_in_output": True}
    assert (await chat(http, **fields)).status_code == 200
    assert (await complete(http, **fields)).status_code == 200
    for spec in engine.specs:
        assert (spec.skip_special_tokens, spec.include_stop_str_in_output) == (False, True)
    assert (await chat(http)).status_code == 200
    assert (engine.specs[-1].skip_special_tokens, engine.specs[-1].include_stop_str_in_output) == (
        True,
        False,
    )


async def test_chat_template_kwargs_reach_the_render(http: httpx.AsyncClient, engine: FakeEngine) -> None:
    response = await chat(http, chat_template_kwargs={"enable_thinking": False, "custom": [1, "x"]})
    assert response.status_code == 200, response.text
    assert engine.template_kwargs == [{"enable_thinking": False, "custom": [1, "x"]}]


@pytest.mark.parametrize("key", ["add_generation_prompt", "chat_template", "tokenize", "conversation"])
async def test_chat_template_kwargs_cannot_override_what_the_server_sets(
    http: httpx.AsyncClient, engine: FakeEngine, key: str
) -> None:
    response = await chat(http, chat_template_kwargs={"enable_thinking": True, key: False})
    assert error(response) == (f"chat_template_kwargs.{key}", "reserved_chat_template_kwarg")
    assert engine.template_kwargs == []


async def test_chat_template_kwargs_count_toward_the_prompt_characters(engine: FakeEngine) -> None:
    app = create_app(ServerSettings(max_prompt_chars=100), lambda: engine, meter=NullEnergyMeter())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            response = await chat(http, chat_template_kwargs={"notes": "x" * 200})
    assert error(response) == ("messages", "context_length_exceeded")


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        ({"regex": "[ab]+"}, {"regex": "[ab]+"}),
        ({"choice": ["yes", "no"]}, {"choice": ["yes", "no"]}),
        ({"grammar": 'root ::= "a"'}, {"grammar": 'root ::= "a"'}),
        ({"json_object": True}, {"json_object": True}),
        ({"json": {"type": "object"}, "disable_any_whitespace": True}, {"json_schema": {"type": "object"}}),
        ({"json": '{"type": "integer"}'}, {"json_schema": {"type": "integer"}}),
    ],
)
async def test_structured_outputs_reach_the_spec(
    http: httpx.AsyncClient, engine: FakeEngine, outputs: dict, expected: dict
) -> None:
    assert (await chat(http, structured_outputs=outputs)).status_code == 200
    assert (await complete(http, structured_outputs=outputs)).status_code == 200
    for spec in engine.specs:
        assert spec.constrained
        assert spec.structured_param == "structured_outputs"
        for name, value in expected.items():
            assert getattr(spec, name) == value
    if "disable_any_whitespace" in outputs:
        assert engine.specs[0].structured_options == {"disable_any_whitespace": True}


async def test_structured_output_json_schemas_go_through_the_caps_and_the_compile_check(
    http: httpx.AsyncClient, engine: FakeEngine
) -> None:
    schema = {"type": "object", "properties": {"v": {"enum": [f"e{i}" for i in range(10)]}}}
    assert (await chat(http, structured_outputs={"json": schema})).status_code == 200
    assert engine.grammar_checks == [json.dumps(schema)]
    schema["properties"]["v"]["enum"].append("e10")
    response = await chat(http, structured_outputs={"json": schema})
    assert error(response) == ("structured_outputs.json", "response_format_too_large")
    response = await complete(http, structured_outputs={"choice": [f"c{i}" for i in range(11)]})
    assert error(response) == ("structured_outputs.choice", "response_format_too_large")
    response = await chat(http, structured_outputs={"regex": "a" * 5000})
    assert error(response) == ("structured_outputs.regex", "response_format_too_large")
    assert len(engine.grammar_checks) == 1


@pytest.mark.parametrize(
    "outputs",
    [
        {},
        {"regex": "a", "choice": ["a"]},
        {"json_object": False},
        {"json": "[1"},
        {"json": "[" * 100_000},
        {"json": "[1]"},
        {"regex": "a\x00"},
        {"structural_tag": "x"},
    ],
)
async def test_malformed_structured_outputs_are_a_400(
    http: httpx.AsyncClient, engine: FakeEngine, outputs: dict
) -> None:
    param, _ = error(await chat(http, structured_outputs=outputs))
    assert param is not None
    assert param.startswith("structured_outputs")
    assert engine.specs == []


async def test_structured_outputs_with_a_response_format_is_a_400(http: httpx.AsyncClient) -> None:
    response = await chat(http, structured_outputs={"regex": "a"}, response_format={"type": "json_object"})
    assert response.status_code == 400
    ok = await chat(http, structured_outputs={"regex": "a"}, response_format={"type": "text"})
    assert ok.status_code == 200


async def test_metadata_and_store_are_accepted_within_openais_bounds(http: httpx.AsyncClient) -> None:
    metadata = {f"k{i}": "v" * 512 for i in range(16)}
    assert (await chat(http, metadata=metadata, store=True)).status_code == 200
    assert (await chat(http, metadata={}, store=False)).status_code == 200
    for bad in ({f"k{i}": "v" for i in range(17)}, {"k" * 65: "v"}, {"k": "v" * 513}, {"k": 1}):
        param, _ = error(await chat(http, metadata=bad))
        assert param is not None
        assert param.startswith("metadata")
    param, _ = error(await complete(http, metadata={"k": "v"}))
    assert param == "metadata"


async def test_completion_logprobs_go_to_20_and_count_in_the_answer_cap(engine: FakeEngine) -> None:
    settings = ServerSettings(max_response_tokens=2 * 21)
    app = create_app(settings, lambda: engine, meter=NullEnergyMeter())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await complete(http, logprobs=20)).status_code == 200
            assert engine.specs[-1].logprobs == 20
            assert error(await complete(http, logprobs=21)) == ("logprobs", None)
            assert error(await complete(http, logprobs=20, max_tokens=3)) == (
                "logprobs",
                "response_too_large",
            )


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}},
    ],
)
async def test_parts_the_model_cannot_take_are_a_coded_400_naming_the_part(
    http: httpx.AsyncClient, engine: FakeEngine, part: dict
) -> None:
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"}, part]},
    ]
    response = await http.post("/v1/chat/completions", json={"model": MODEL, "messages": messages})
    assert error(response) == ("messages.1.content.1", "unsupported_content_part")
    assert part["type"] in response.json()["error"]["message"]
    assert "not supported" in response.json()["error"]["message"]
    assert engine.template_kwargs == []  # refused before anything was rendered


async def test_unknown_fields_stay_refused_by_name(http: httpx.AsyncClient) -> None:
    assert error(await chat(http, not_a_field=1)) == ("not_a_field", None)
    assert error(await chat(http, structured_outputs={"regex": "a", "nope": 1})) == (
        "structured_outputs.nope",
        None,
    )


async def test_lone_surrogates_in_the_new_fields_are_still_refused(http: httpx.AsyncClient) -> None:
    body = json.dumps({"model": MODEL, "messages": MESSAGES, "metadata": {"k": "\ud800"}})
    response = await http.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert error(response) == ("metadata.k", "invalid_encoding")
    # A JSON schema sent as a string hides its escapes from the body's check until it is parsed.
    response = await chat(http, structured_outputs={"json": '{"enum": ["\\ud800"]}'})
    assert error(response)[0] == "structured_outputs.json"
