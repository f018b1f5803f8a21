"""The same requests to wattserve and to vLLM's own server on the same model: the same answers.

Both run the embedded model with the same engine flags, so a greedy (or seeded) request gets the same
tokens from each. Compared: status codes, each choice's text, finish and stop reasons and logprob
counts, token usage, and for streams each choice's chunks (its text, the role chunk, finish and stop
reasons, running usage) and the usage chunk. Errors are compared by status and by carrying a message;
their `type` and `code` differ on purpose (wattserve's are OpenAI's, listed in docs/api.md). Fields one
server adds and the other has not (wattserve's `service_tier` and `usage.energy`, vLLM's
`prompt_token_ids` and other extensions) are outside the comparison.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import API_KEY, MODEL, Server, VllmReference

pytestmark = pytest.mark.e2e
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
GREEDY = {"model": MODEL, "temperature": 0, "max_tokens": 12}
# vLLM refuses n > 1 with greedy sampling, as wattserve does; sampled, every choice runs to max_tokens.
SAMPLED = {"temperature": 1.0, "seed": 7, "ignore_eos": True}
MESSAGES = [{"role": "user", "content": "Tell me about the sea"}]
CONTEXT = 1024  # ENGINE_FLAGS' --max-model-len

# name: (path, body); bodies hold every request field vLLM accepts that wattserve once refused.
REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat_template_kwargs": (
        CHAT,
        {"messages": MESSAGES, "chat_template_kwargs": {"enable_thinking": False}},
    ),
    "structured_outputs choice": (
        CHAT,
        {"messages": MESSAGES, "structured_outputs": {"choice": ["yes", "no"]}},
    ),
    "skip_special_tokens": (COMPLETIONS, {"prompt": "Once upon a time", "skip_special_tokens": False}),
    "include_stop_str_in_output": (
        COMPLETIONS,
        {"prompt": "Once upon a time", "stop": ["e"], "include_stop_str_in_output": True},
    ),
    "stop string reason": (COMPLETIONS, {"prompt": "Once upon a time", "stop": ["e"]}),
    "metadata and store": (CHAT, {"messages": MESSAGES, "metadata": {"team": "search"}, "store": False}),
    "token-id prompt": (COMPLETIONS, {"prompt": [5, 17, 300, 42]}),
    "token-id prompts": (COMPLETIONS, {"prompt": [[5, 17, 300], [42, 43]]}),
    "echo": (COMPLETIONS, {"prompt": "Once upon a time", "echo": True}),
    "logprobs 20": (COMPLETIONS, {"prompt": "Once upon a time", "logprobs": 20}),
    "chat top_logprobs 20": (CHAT, {"messages": MESSAGES, "logprobs": True, "top_logprobs": 20}),
    "n=2 greedy": (COMPLETIONS, {"prompt": "Once upon a time", "n": 2}),
    "n=2 sampled": (COMPLETIONS, {"prompt": "Once upon a time", "n": 2, **SAMPLED}),
    "unknown model": (COMPLETIONS, {"prompt": "hi", "model": "no-such-model"}),
    "too-long prompt": (COMPLETIONS, {"prompt": [7] * (CONTEXT + 10)}),
}
STREAMS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat n=2 continuous usage": (
        CHAT,
        {
            "messages": MESSAGES,
            "n": 2,
            **SAMPLED,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        },
    ),
    "completions n=2 continuous usage": (
        COMPLETIONS,
        {
            "prompt": "Once upon a time",
            "n": 2,
            **SAMPLED,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        },
    ),
    "chat with usage": (CHAT, {"messages": MESSAGES, "stream_options": {"include_usage": True}}),
    "completions echo": (COMPLETIONS, {"prompt": "Once upon a time", "echo": True}),
}


def post(base_url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {API_KEY}"}  # vLLM's server runs without a key and ignores it
    return httpx.post(base_url + path, json=GREEDY | body, headers=headers, timeout=120)


def _logprob_counts(logprobs: dict[str, Any] | None) -> tuple[int, ...] | None:
    if logprobs is None:
        return None
    if "content" in logprobs:  # chat's form
        return tuple(len(entry["top_logprobs"]) for entry in logprobs["content"])
    return tuple(len(top or {}) for top in logprobs["top_logprobs"])


def _choice(choice: dict[str, Any]) -> tuple[Any, ...]:
    text = choice["message"]["content"] if "message" in choice else choice["text"]
    return (
        choice["index"],
        text,
        choice["finish_reason"],
        choice.get("stop_reason"),
        _logprob_counts(choice.get("logprobs")),
    )


def answer(response: httpx.Response) -> dict[str, Any]:
    """What both servers must agree on in one answer."""
    body = response.json()
    if response.status_code != 200:
        return {"status": response.status_code, "has_message": bool(body["error"]["message"])}
    usage = body["usage"]
    return {
        "status": 200,
        "object": body["object"],
        "choices": sorted(_choice(choice) for choice in body["choices"]),
        "usage": (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]),
        "refusal": [
            choice["message"].get("refusal", "absent") for choice in body["choices"] if "message" in choice
        ],
    }


def stream_shapes(response: httpx.Response) -> dict[int | None, list[tuple[Any, ...]]]:
    """Each choice's chunks in order (text, whether it names the role, finish, stop reason, running usage),
    and the choiceless usage chunks under None.

    How the chunks of different choices interleave follows the engine's timing in vLLM, so only each
    choice's own order is compared; a chunk always carries one choice.
    """
    assert response.status_code == 200, response.text
    shapes: dict[int | None, list[tuple[Any, ...]]] = {}
    for line in response.text.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line.removeprefix("data: "))
        usage = chunk.get("usage")
        counts = None if usage is None else (usage["prompt_tokens"], usage["completion_tokens"])
        if not chunk["choices"]:
            shapes.setdefault(None, []).append(("usage", counts))
            continue
        (choice,) = chunk["choices"]
        delta = choice.get("delta", {})
        text = delta.get("content") if "delta" in choice else choice["text"]
        if text == "" and not delta.get("role") and choice["finish_reason"] is None and usage is None:
            continue  # vLLM's chunk for a token that ends mid-character; wattserve sends none (one send less)
        shapes.setdefault(choice["index"], []).append(
            (text, "role" in delta, choice["finish_reason"], choice.get("stop_reason"), counts)
        )
    return shapes


@pytest.mark.parametrize("name", list(REQUESTS))
def test_the_same_request_gets_the_same_answer(
    name: str, server: Server, vllm_reference: VllmReference
) -> None:
    path, body = REQUESTS[name]
    ours = answer(post(server.base_url, path, body))
    theirs = answer(post(vllm_reference.base_url, path, body))
    assert ours == theirs


@pytest.mark.parametrize("name", list(STREAMS))
def test_the_same_stream_has_the_same_chunk_shapes(
    name: str, server: Server, vllm_reference: VllmReference
) -> None:
    path, body = STREAMS[name]
    body = body | {"stream": True}
    assert stream_shapes(post(server.base_url, path, body)) == stream_shapes(
        post(vllm_reference.base_url, path, body)
    )


TOKENIZER_REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "tokenize a prompt": (
        "/tokenize",
        {"model": MODEL, "prompt": "Once upon a time", "return_token_strs": True},
    ),
    "tokenize without special tokens": (
        "/tokenize",
        {"prompt": "Once upon a time", "add_special_tokens": False},
    ),
    "tokenize a chat": ("/tokenize", {"model": MODEL, "messages": MESSAGES}),
    "tokenize a chat without the generation prompt": (
        "/tokenize",
        {"messages": MESSAGES, "add_generation_prompt": False},
    ),
    "detokenize": ("/detokenize", {"model": MODEL, "tokens": [5, 17, 300, 42]}),
}


@pytest.mark.parametrize("name", list(TOKENIZER_REQUESTS))
def test_the_tokenizer_routes_answer_alike(name: str, server: Server, vllm_reference: VllmReference) -> None:
    path, body = TOKENIZER_REQUESTS[name]
    headers = {"Authorization": f"Bearer {API_KEY}"}
    ours = httpx.post(server.base_url + path, json=body, headers=headers, timeout=60)
    theirs = httpx.post(vllm_reference.base_url + path, json=body, timeout=60)
    assert (ours.status_code, ours.json()) == (theirs.status_code, theirs.json())


def test_tokenize_round_trips_through_detokenize_and_counts_as_a_chat_completion_does(server: Server) -> None:
    with server.http() as http:
        text = "Once upon a time, by the sea"
        tokens = http.post("/tokenize", json={"prompt": text, "add_special_tokens": False}).json()["tokens"]
        assert http.post("/detokenize", json={"tokens": tokens}).json()["prompt"] == text
        counted = http.post("/tokenize", json={"messages": MESSAGES}).json()["count"]
        chat = http.post("/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, "max_tokens": 1})
        assert chat.json()["usage"]["prompt_tokens"] == counted
