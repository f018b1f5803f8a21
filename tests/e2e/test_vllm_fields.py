"""The request fields `vllm serve` accepts beyond OpenAI's core set, on the real server: accepted, and doing
what vLLM does with them where the embedded model lets it show.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import pytest

from server.default_model import SPECIAL_TOKENS
from tests.e2e.conftest import MODEL, Server

pytestmark = pytest.mark.e2e
PROMPT = "The sea was calm and"
MESSAGES = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with server.http() as client:
        yield client


def complete(http: httpx.Client, **fields: object) -> dict:
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 16, "temperature": 0, **fields}
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def chat(http: httpx.Client, **fields: object) -> httpx.Response:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 8, "temperature": 0, **fields}
    return http.post("/v1/chat/completions", json=body)


def test_include_stop_str_in_output_keeps_the_stop_string(http: httpx.Client) -> None:
    text = complete(http, ignore_eos=True)["choices"][0]["text"]
    stop = next(text[i : i + 3] for i in range(2, len(text) - 3) if text[i : i + 3].strip())
    cut = text.index(stop)
    without = complete(http, ignore_eos=True, stop=stop)["choices"][0]
    kept = complete(http, ignore_eos=True, stop=stop, include_stop_str_in_output=True)["choices"][0]
    assert (without["text"], without["finish_reason"]) == (text[:cut], "stop")
    assert (kept["text"], kept["finish_reason"]) == (text[: cut + len(stop)], "stop")


def test_skip_special_tokens_false_keeps_them_in_the_text(http: httpx.Client) -> None:
    # Past its end-of-sequence token (ignore_eos) a random-weight model may write any special token; kept,
    # they are all that differs from the default text.
    fields = {"ignore_eos": True, "max_tokens": 200}
    skipped = complete(http, **fields)["choices"][0]["text"]
    kept = complete(http, **fields, skip_special_tokens=False)["choices"][0]["text"]
    assert not any(token in skipped for token in SPECIAL_TOKENS)
    without_specials = kept
    for token in SPECIAL_TOKENS:
        without_specials = without_specials.replace(token, "")
    assert re.sub(r"\s", "", without_specials) == re.sub(r"\s", "", skipped)


def test_chat_template_kwargs_are_accepted_and_reserved_ones_refused(http: httpx.Client) -> None:
    plain = chat(http)
    assert plain.status_code == 200, plain.text
    # The embedded template declares no extra variables: vLLM passes it only those it declares.
    thinking = chat(http, chat_template_kwargs={"enable_thinking": False})
    assert thinking.status_code == 200, thinking.text
    assert thinking.json()["usage"]["prompt_tokens"] == plain.json()["usage"]["prompt_tokens"]
    refused = chat(http, chat_template_kwargs={"add_generation_prompt": False})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert (error["param"], error["code"]) == (
        "chat_template_kwargs.add_generation_prompt",
        "reserved_chat_template_kwarg",
    )


def test_metadata_and_store_are_accepted(http: httpx.Client) -> None:
    response = chat(http, metadata={"team": "search", "run": "7"}, store=True)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("outputs", "matches"),
    [
        ({"choice": ["yes", "no"]}, lambda text: text in ("yes", "no")),
        ({"regex": "[0-9]{3}"}, lambda text: re.fullmatch("[0-9]{3}", text) is not None),
        ({"json": {"enum": ["red", "green"]}}, lambda text: json.loads(text) in ("red", "green")),
    ],
)
def test_structured_outputs_constrain_the_answer(http: httpx.Client, outputs: dict, matches) -> None:  # noqa: ANN001
    response = chat(http, structured_outputs=outputs, max_tokens=16)
    assert response.status_code == 200, response.text
    assert matches(response.json()["choices"][0]["message"]["content"])
    text = complete(http, structured_outputs=outputs)["choices"][0]["text"]
    assert matches(text)


def test_completion_logprobs_return_twenty_alternatives(http: httpx.Client) -> None:
    logprobs = complete(http, logprobs=20, max_tokens=8, ignore_eos=True)["choices"][0]["logprobs"]
    # Alternatives are keyed by their text (OpenAI's legacy shape): distinct tokens that decode alike, such
    # as lone bytes of a character, share a key, so a position may show fewer.
    sizes = [len(top) for top in logprobs["top_logprobs"]]
    assert len(sizes) == 8
    assert max(sizes) == 20
    assert all(size <= 20 for size in sizes)


def test_an_image_part_is_a_400_naming_it(http: httpx.Client) -> None:
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    response = chat(http, messages=[{"role": "user", "content": content}])
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("messages.0.content.1", "unsupported_content_part")
    assert "text only" in error["message"]
