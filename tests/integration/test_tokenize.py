"""`/tokenize` and `/detokenize` in the in-process app on the fake engine: vLLM's shapes, the input limits,
coded errors, and the user key."""

from __future__ import annotations

import pytest

from tests.integration.fake_engine import FakeEngine
from tests.integration.test_openai_surface import KEY, MODEL, serving

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
CHAT = {"messages": [{"role": "user", "content": "one two three"}]}


async def test_a_prompt_tokenizes_with_or_without_special_tokens_and_names_its_tokens() -> None:
    async with serving() as http:
        full = await http.post("/tokenize", headers=KEY, json={"model": MODEL, "prompt": "a b c d"})
        bare = await http.post(
            "/tokenize", headers=KEY, json={"prompt": "a b c d", "add_special_tokens": False}
        )
        named = await http.post("/tokenize", headers=KEY, json={"prompt": "a b", "return_token_strs": True})
    assert full.json() == {
        "count": 4,
        "max_model_len": FakeEngine.max_model_len,
        "tokens": [0, 1, 2, 3],
        "token_strs": None,
    }
    assert bare.json()["tokens"] == [1, 2, 3]
    assert named.json()["token_strs"] == ["<0>", "<1>"]


async def test_chat_messages_tokenize_through_the_template_with_or_without_the_generation_prompt() -> None:
    async with serving() as http:
        with_prompt = await http.post("/tokenize", headers=KEY, json=CHAT)
        without = await http.post("/tokenize", headers=KEY, json=CHAT | {"add_generation_prompt": False})
    assert (with_prompt.json()["count"], without.json()["count"]) == (5, 4)


async def test_detokenize_gives_the_text_of_the_ids() -> None:
    async with serving() as http:
        answer = await http.post("/detokenize", headers=KEY, json={"model": MODEL, "tokens": [0, 1, 6]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"prompt": "alpha beta beta "}


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "param"),
    [
        ("/tokenize", {"model": "other", "prompt": "a"}, 404, "model_not_found", "model"),
        ("/tokenize", {"prompt": "a", "temperature": 1}, 400, None, None),
        (
            "/tokenize",
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, IMAGE]}]},
            400,
            "unsupported_content_part",
            "messages.0.content.1",
        ),
        ("/tokenize", {"prompt": "x" * 10_000}, 400, "context_length_exceeded", "prompt"),
        ("/tokenize", {"messages": [{"role": "user", "content": "a"}] * 2_000}, 400, None, "messages"),
        ("/detokenize", {"tokens": [1, FakeEngine.vocab_size]}, 400, None, "tokens.1"),
        (
            "/detokenize",
            {"tokens": [1] * (FakeEngine.max_model_len + 1)},
            400,
            "context_length_exceeded",
            "tokens",
        ),
        ("/detokenize", {"tokens": [-1]}, 400, None, None),
    ],
)
async def test_bad_input_gets_a_coded_error(
    path: str, body: dict, status: int, code: str | None, param: str | None
) -> None:
    async with serving() as http:
        answer = await http.post(path, headers=KEY, json=body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param


@pytest.mark.parametrize("path", ["/tokenize", "/detokenize"])
async def test_the_tokenizer_routes_take_the_user_key(path: str) -> None:
    async with serving() as http:
        answer = await http.post(path, json={"prompt": "a", "tokens": [1]})
    assert answer.status_code == 401
