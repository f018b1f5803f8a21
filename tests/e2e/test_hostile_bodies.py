"""Hostile request bodies on the real server: each refused with a coded 400, nobody else held up.

Each class of body (text no UTF-8 can encode, a chat of 200,000 empty messages, characters spread over
message fields or over many prompts, an answer of tens of MB) is sent a few times at once while small
chats are timed (`latency_probe`), then the server's request gauges must come back to 0.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
from collections.abc import Callable

import httpx
import pytest

from tests.e2e.conftest import ADMIN_KEY, API_KEY, MODEL, Server
from tests.e2e.gauges import wait_for_idle_gauges
from tests.e2e.latency_probe import latency_ratio, ratio_tolerable

pytestmark = pytest.mark.e2e
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
AT_ONCE = 3  # hostile requests in flight together while the small ones are timed


def chat(**fields: object) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **fields}


# (path, body, code, param) per class; the server runs with its defaults on a 1024-token context:
# --max-prompt-chars 32768, --max-chat-messages 2048, --max-response-tokens 131072.
HOSTILE = {
    "lone surrogate in stop": (CHAT, chat(stop="\ud800"), "invalid_encoding", "stop"),
    "lone surrogate in a streamed stop": (
        CHAT,
        chat(stop=["\udfff"], stream=True),
        "invalid_encoding",
        "stop.0",
    ),
    "lone surrogate in a completion's stop": (
        COMPLETIONS,
        {"model": MODEL, "prompt": "hi", "max_tokens": 4, "stop": "a\ud800"},
        "invalid_encoding",
        "stop",
    ),
    "200,000 empty messages": (
        CHAT,
        chat(messages=[{"role": "user", "content": ""}] * 200_000),
        "array_above_max_length",
        "messages",
    ),
    "characters in message names": (
        CHAT,
        chat(messages=[{"role": "user", "content": "", "name": "n" * 20}] * 2000),
        "context_length_exceeded",
        "messages",
    ),
    "characters over many prompts": (
        COMPLETIONS,
        {"model": MODEL, "prompt": ["y" * 65_536] * 32, "max_tokens": 1},
        "context_length_exceeded",
        "prompt",
    ),
    "an answer of 32 x 600 tokens x 21 logprobs": (
        CHAT,
        chat(n=32, max_tokens=600, temperature=1.0, logprobs=True, top_logprobs=20),
        "response_too_large",
        "top_logprobs",
    ),
}


def sender(
    server: Server, path: str, body: dict, key: str, answers: list[httpx.Response]
) -> Callable[[threading.Event], None]:
    """A misbehaviour for `latency_ratio`: `AT_ONCE` copies of the body in flight together."""
    # json.dumps escapes lone surrogates as valid JSON (`\ud800`), as a hostile client sends them.
    payload = json.dumps(body).encode()

    def post() -> httpx.Response:
        with server.http(key=key) as http:
            return http.post(path, content=payload, headers={"Content-Type": "application/json"})

    def misbehave(started: threading.Event) -> None:
        with concurrent.futures.ThreadPoolExecutor(AT_ONCE) as pool:
            futures = [pool.submit(post) for _ in range(AT_ONCE)]
            started.set()
            answers.extend(future.result() for future in futures)

    return misbehave


def assert_refused(response: httpx.Response, code: str, param: str) -> None:
    assert response.status_code == 400, response.text[:500]
    error = json.loads(response.content.decode("utf-8"))["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param), error


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_body_is_refused_and_others_keep_their_latency(server: Server, name: str) -> None:
    path, body, code, param = HOSTILE[name]
    answers: list[httpx.Response] = []
    ratio = latency_ratio(server, sender(server, path, body, API_KEY, answers))
    assert len(answers) == AT_ONCE
    for answer in answers:
        assert_refused(answer, code, param)
    assert ratio_tolerable(ratio), f"small requests took {ratio:.1f}x as long during {name}"
    wait_for_idle_gauges(server)


def test_an_admin_body_with_a_lone_surrogate_is_refused(lora_server: Server) -> None:
    answers: list[httpx.Response] = []
    unload = sender(lora_server, "/v1/unload_lora_adapter", {"lora_name": "\ud800"}, ADMIN_KEY, answers)
    ratio = latency_ratio(lora_server, unload)
    for answer in answers:
        assert_refused(answer, "invalid_encoding", "lora_name")
    assert ratio_tolerable(ratio), f"small requests took {ratio:.1f}x as long"
    with lora_server.http(key=ADMIN_KEY) as admin:
        assert admin.get("/v1/adapters/demo-alpha").status_code == 200  # nothing was unloaded
    wait_for_idle_gauges(lora_server)


def test_a_prompt_longer_than_the_context_is_refused_by_vllms_own_check(server: Server) -> None:
    with server.http() as http:
        response = http.post(COMPLETIONS, json={"model": MODEL, "prompt": [7] * 2000, "max_tokens": 1})
    assert_refused(response, "context_length_exceeded", "prompt")
    # vLLM's wording: the prompt alone is over the context, before any output is counted.
    assert "input tokens" in response.json()["error"]["message"]
    wait_for_idle_gauges(server)
