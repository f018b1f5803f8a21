"""Bad input gets OpenAI's error body with the right status, and the server keeps serving."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.conftest import ENGINE_FLAGS, MODEL, Server

pytestmark = pytest.mark.e2e
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def assert_error(response: httpx.Response, status: int, param: str | None = None, text: str = "") -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert "Traceback" not in error["message"]
    if param is not None:
        assert error["param"] == param
    assert text.lower() in error["message"].lower()
    return error


@pytest.mark.parametrize(
    ("patch", "param", "text"),
    [
        ({"temperature": "hot"}, "temperature", ""),
        ({"temperature": 3.5}, "temperature", ""),
        ({"top_p": 0}, "top_p", ""),
        ({"n": 0}, "n", ""),
        ({"max_tokens": 0}, "max_tokens", ""),
        ({"max_tokens": "many"}, "max_tokens", ""),
        ({"messages": []}, "messages", ""),
        ({"messages": [{"role": "wizard", "content": "x"}]}, None, ""),
        ({"stop": ["a", "b", "c", "d", "e"]}, None, "stop"),
        ({"stream_options": {"include_usage": True}}, None, "stream"),
        ({"top_logprobs": 2}, None, "logprobs"),
        ({"response_format": {"type": "json_schema"}}, None, "json_schema"),
        ({"functions": [{"name": "f"}]}, "functions", "not supported"),
        (
            {"tools": [{"type": "function", "function": {"name": "f"}}]},
            "tool_choice",
            "--enable-auto-tool-choice",
        ),
        ({"logit_bias": {"1": 5}}, "logit_bias", "not supported"),
        ({"frobnicate": True}, "frobnicate", "unrecognized"),
        ({"n": 2, "temperature": 0}, None, "greedy"),
        ({"max_tokens": 5000}, None, "maximum context length"),
        # OpenAI's types are strict: no string-to-bool or string-to-int coercion.
        ({"stream": "yes"}, "stream", "boolean"),
        ({"max_tokens": "16"}, "max_tokens", "integer"),
        ({"n": 1.5}, "n", "integer"),
        ({"logprobs": "true"}, "logprobs", "boolean"),
        ({"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage", ""),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content", ""),
    ],
)
def test_invalid_chat_fields_are_400(server: Server, patch: dict, param: str | None, text: str) -> None:
    with server.http() as http:
        assert_error(http.post("/v1/chat/completions", json={**CHAT, **patch}), 400, param, text)


def test_context_length_error_has_its_code(server: Server) -> None:
    with server.http() as http:
        error = assert_error(
            http.post("/v1/completions", json={"model": MODEL, "prompt": "word " * 1500}), 400, "prompt"
        )
    assert error["code"] == "context_length_exceeded"


def test_missing_required_field_is_400(server: Server) -> None:
    with server.http() as http:
        assert_error(http.post("/v1/completions", json={"model": MODEL}), 400, "prompt")


def test_body_that_is_not_json_is_400(server: Server) -> None:
    with server.http() as http:
        response = http.post(
            "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert_error(response, 400)


def test_one_request_may_not_ask_for_more_than_the_engine_batch(server: Server) -> None:
    """It holds one admission slot: more sequences than the batch would slip past admission control."""
    with server.http() as http:
        batch = int(ENGINE_FLAGS[ENGINE_FLAGS.index("--max-num-seqs") + 1])
        prompts = {"model": MODEL, "prompt": ["Once"] * (batch + 1), "max_tokens": 1}
        assert_error(http.post("/v1/completions", json=prompts), 400, "prompt", "--max-num-seqs")
        fanned = {"model": MODEL, "prompt": ["Once"] * batch, "max_tokens": 1, "n": 2, "temperature": 1}
        assert_error(http.post("/v1/completions", json=fanned), 400, "prompt", "--max-num-seqs")


def test_unsupported_completion_field_names_it(server: Server) -> None:
    with server.http() as http:
        body = {"model": MODEL, "prompt": "x", "suffix": "y"}
        assert_error(http.post("/v1/completions", json=body), 400, "suffix", "not supported")


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9", messages=CHAT["messages"])
    assert caught.value.body["code"] == "model_not_found"


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_missing_or_wrong_key_is_401(server: Server, key: str | None) -> None:
    with server.http(key=key) as http:
        for path, method in [
            ("/v1/chat/completions", "POST"),
            ("/v1/completions", "POST"),
            ("/v1/models", "GET"),
        ]:
            response = http.request(method, path, json=CHAT if method == "POST" else None)
            assert_error(response, 401)


def test_a_key_is_checked_before_the_body(server: Server) -> None:
    with server.http(key=None) as http:
        response = http.post(
            "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert_error(response, 401)


def test_api_docs_need_the_key_and_list_the_real_status_codes(server: Server) -> None:
    with server.http(key=None) as http:
        for path in ("/docs", "/openapi.json"):
            assert_error(http.get(path), 401)
    with server.http() as http:
        assert http.get("/docs").status_code == 200
        document = http.get("/openapi.json").json()
    for path in ("/v1/chat/completions", "/v1/completions"):
        responses = document["paths"][path]["post"]["responses"]
        assert set(responses) == {"200", "400", "401", "404", "413", "429", "503"}
        assert "text/event-stream" in responses["200"]["content"]
        assert responses["429"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorResponse"
        }
    assert not any("422" in op["responses"] for ops in document["paths"].values() for op in ops.values())


RECURSIVE_SCHEMA = {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}


def test_a_schema_nothing_can_match_is_an_error_not_a_finish_reason(server: Server) -> None:
    body = {
        **CHAT,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": RECURSIVE_SCHEMA}},
    }
    with server.http() as http:
        assert_error(http.post("/v1/chat/completions", json=body), 400, "response_format", "schema")
        streamed = http.post("/v1/chat/completions", json={**body, "stream": True})
    events = [
        line.removeprefix("data: ") for line in streamed.text.split("\n\n") if line.startswith("data: ")
    ]
    assert events[-1] == "[DONE]"
    assert "admits no output" in events[-2]
    assert '"finish_reason":"error"' not in streamed.text


def test_openai_client_raises_authentication_error(server: Server) -> None:
    bad = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_unknown_route_and_wrong_method_use_the_error_body(server: Server) -> None:
    with server.http() as http:
        assert_error(http.get("/v1/nothing-here"), 404)
        assert_error(http.get("/v1/chat/completions"), 405)


def test_server_still_serves_after_the_bad_requests(client: openai.OpenAI) -> None:
    assert client.chat.completions.create(**CHAT).choices
