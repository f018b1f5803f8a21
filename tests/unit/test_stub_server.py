"""The bundled stub server, run as a subprocess and spoken to over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtest import stub_server
from loadtest.processes import start_server, stop_server
from tests.waiting import wait_until

MESSAGES = [{"role": "user", "content": "say something nice"}]


def _start(*extra: str) -> tuple[subprocess.Popen, str]:
    return start_server([sys.executable, "-m", "loadtest.stub_server", *extra], Path(os.devnull))


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    process, url = _start("--model", "stub-base")
    try:
        with httpx.Client(base_url=url, timeout=10) as http:
            yield http
    finally:
        stop_server(process)


def _events(client: httpx.Client, path: str, body: dict) -> list[str]:
    """The `data:` payloads of one streamed response, in order."""
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]


def _counters(client: httpx.Client) -> dict[str, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def test_health_and_models(client: httpx.Client) -> None:
    assert client.get("/health").status_code == 200
    models = client.get("/v1/models").json()
    assert [card["id"] for card in models["data"]] == ["stub-base"]


def test_streamed_chat_has_role_tokens_usage_and_done(client: httpx.Client) -> None:
    body = {
        "model": "alpha",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = _events(client, "/v1/chat/completions", body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {chunk["model"] for chunk in chunks} == {"alpha"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [c for c in chunks[1:] if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content) == 16
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finish] == ["length"]
    usage = chunks[-1]
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 3, "completion_tokens": 16, "total_tokens": 19}


def test_usage_chunk_only_when_asked(client: httpx.Client) -> None:
    events = _events(client, "/v1/chat/completions", {"messages": MESSAGES, "stream": True})
    assert events[-1] == "[DONE]"
    assert all("usage" not in json.loads(event) for event in events[:-1])


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_respected(client: httpx.Client, field: str) -> None:
    body = {"messages": MESSAGES, "stream": True, field: 5, "stream_options": {"include_usage": True}}
    chunks = [json.loads(e) for e in _events(client, "/v1/chat/completions", body)[:-1]]
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content) == 5
    assert chunks[-1]["usage"]["completion_tokens"] == 5


def test_completions_stream_text_chunks(client: httpx.Client) -> None:
    body = {"model": "beta", "prompt": "one two", "max_tokens": 4, "stream": True}
    events = _events(client, "/v1/completions", body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["object"] == "text_completion" for chunk in chunks)
    texts = [chunk["choices"][0]["text"] for chunk in chunks]
    assert texts == [" tok"] * 4 + [""]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_non_stream_bodies(client: httpx.Client) -> None:
    chat = client.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES, "max_tokens": 3})
    assert chat.status_code == 200
    body = chat.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "m"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": " tok tok tok"}
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    text = client.post("/v1/completions", json={"prompt": "a b c d", "max_tokens": 2}).json()
    assert text["choices"][0]["text"] == " tok tok"
    assert text["usage"]["prompt_tokens"] == 4


@pytest.mark.parametrize(
    ("asked", "served"),
    [("flex", "flex"), ("priority", "priority"), ("default", "default"), ("auto", "default")],
)
def test_service_tier_is_echoed_on_every_chunk_as_openai_does(
    client: httpx.Client, asked: str, served: str
) -> None:
    body = {
        "messages": MESSAGES,
        "stream": True,
        "service_tier": asked,
        "stream_options": {"include_usage": True},
    }
    chunks = [json.loads(event) for event in _events(client, "/v1/chat/completions", body)[:-1]]
    assert len(chunks) > 2
    assert {chunk["service_tier"] for chunk in chunks} == {served}
    completion = client.post("/v1/completions", json={"prompt": "a", "max_tokens": 2, "service_tier": asked})
    assert completion.json()["service_tier"] == served


def test_without_a_service_tier_the_default_tier_serves(client: httpx.Client) -> None:
    events = _events(client, "/v1/completions", {"prompt": "a", "max_tokens": 2, "stream": True})
    assert {json.loads(event)["service_tier"] for event in events[:-1]} == {"default"}


def test_metrics_count_tokens(client: httpx.Client) -> None:
    before = _counters(client)
    _events(client, "/v1/chat/completions", {"messages": MESSAGES, "stream": True, "max_tokens": 7})
    client.post("/v1/completions", json={"prompt": "a b c d e", "max_tokens": 2})
    after = _counters(client)
    assert after["vllm:prompt_tokens_total"] - before.get("vllm:prompt_tokens_total", 0) == 3 + 5
    assert after["vllm:generation_tokens_total"] - before.get("vllm:generation_tokens_total", 0) == 7 + 2


def test_invalid_json_is_openai_400(client: httpx.Client) -> None:
    response = client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
        ("/v1/chat/completions", {"prompt": "no messages"}, "messages"),
        ("/v1/completions", {"messages": MESSAGES}, "prompt"),
        ("/v1/chat/completions", {"messages": MESSAGES, "service_tier": "slow"}, "service_tier"),
        ("/v1/completions", {"prompt": "a", "service_tier": 1}, "service_tier"),
    ],
)
def test_bad_fields_are_400(client: httpx.Client, path: str, body: dict, param: str) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_unknown_route_and_wrong_method(client: httpx.Client) -> None:
    missing = client.get("/v1/nothing")
    assert missing.status_code == 404
    assert "message" in missing.json()["error"]
    assert client.get("/v1/chat/completions").status_code == 405


async def test_a_paced_stream_waits_the_first_token_time_then_one_gap_before_each_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    timeline: list[float | str] = []

    async def wait(receive: object, delay_s: float) -> bool:
        timeline.append(delay_s)
        return False  # the client stays

    monkeypatch.setattr(stub_server, "_client_left", wait)
    app = stub_server.StubApp(ttft_ms=50, itl_ms=10)
    body = json.dumps({"messages": MESSAGES, "stream": True, "max_tokens": 6}).encode()

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.body":
            timeline.append(f"{message['body'].count(b'data: {')} chunks")

    await app({"type": "http", "path": "/v1/chat/completions", "method": "POST"}, receive, send)
    # 50 ms to the first token (sent with the role chunk), then 10 ms before each of the other five.
    assert timeline == [0.05, "2 chunks", *[0.01, "1 chunks"] * 4, 0.01, "2 chunks"]


def test_paced_stream_completes_and_stops_on_disconnect() -> None:
    process, url = _start("--ttft-ms", "50", "--itl-ms", "10")
    try:
        with httpx.Client(base_url=url, timeout=10) as http:
            body = {"messages": MESSAGES, "stream": True, "max_tokens": 6}
            events = _events(http, "/v1/chat/completions", body)
            assert _counters(http)["vllm:generation_tokens_total"] == 6
            with http.stream("POST", "/v1/chat/completions", json={**body, "max_tokens": 1000}) as response:
                next(response.iter_lines())

            def generated() -> float:
                return _counters(http)["vllm:generation_tokens_total"]

            # The stub counts an abandoned stream's tokens once it stops; all 1000 would take 10 s.
            wait_until(lambda: generated() > 6, "the abandoned stream stopped", timeout_s=5)
            stopped_at = generated()
    finally:
        stop_server(process)
    assert events[-1] == "[DONE]"
    assert 6 < stopped_at < 6 + 100
