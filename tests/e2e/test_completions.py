"""Legacy completions through the official OpenAI client against the real server."""

from __future__ import annotations

import openai
import pytest

from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.e2e
PROMPT = "The sea was calm and"


def complete(client: openai.OpenAI, **overrides):
    params = {"model": MODEL, "prompt": PROMPT, "max_tokens": 16, "temperature": 0, **overrides}
    return client.completions.create(**params)


def test_completion_has_text_usage_and_finish_reason(client: openai.OpenAI) -> None:
    response = complete(client, extra_body={"ignore_eos": True})
    assert response.object == "text_completion"
    (choice,) = response.choices
    assert choice.text
    assert choice.finish_reason == "length"
    assert response.usage.completion_tokens == 16
    assert response.usage.total_tokens == response.usage.prompt_tokens + 16


def test_default_max_tokens_is_sixteen(client: openai.OpenAI) -> None:
    response = client.completions.create(model=MODEL, prompt=PROMPT, extra_body={"ignore_eos": True})
    assert response.usage.completion_tokens == 16


def test_list_of_prompts_gives_one_choice_each_in_order(client: openai.OpenAI) -> None:
    prompts = [PROMPT, "Another prompt entirely", PROMPT]
    response = complete(client, prompt=prompts)
    assert [choice.index for choice in response.choices] == [0, 1, 2]
    texts = [choice.text for choice in response.choices]
    assert texts[0] == texts[2] == complete(client).choices[0].text
    single = [complete(client, prompt=p).usage.prompt_tokens for p in prompts]
    assert response.usage.prompt_tokens == sum(single)


def test_list_of_prompts_with_n(client: openai.OpenAI) -> None:
    response = complete(
        client,
        prompt=[PROMPT, "Other"],
        n=2,
        temperature=1.0,
        seed=1,
        max_tokens=4,
        extra_body={"ignore_eos": True},
    )
    assert sorted(choice.index for choice in response.choices) == [0, 1, 2, 3]
    assert response.usage.completion_tokens == 16


def test_echo_prepends_the_prompt(client: openai.OpenAI) -> None:
    plain = complete(client).choices[0].text
    assert complete(client, echo=True).choices[0].text == PROMPT + plain


def spelled(tokens: list[str], text: str) -> tuple[str, str]:
    """The tokens joined, beside the text. The random model can emit bytes that never complete a
    character: their tokens read as empty strings and the text shows U+FFFD for them, as in vLLM."""
    return "".join(tokens), text.replace("\ufffd", "")


def test_logprobs_shape(client: openai.OpenAI) -> None:
    response = complete(client, logprobs=2, max_tokens=5, extra_body={"ignore_eos": True})
    logprobs = response.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 5
    joined, text = spelled(logprobs.tokens, response.choices[0].text)
    assert joined == text
    assert all(len(top) <= 2 and top for top in logprobs.top_logprobs)
    assert logprobs.text_offset == sorted(logprobs.text_offset)


def test_echo_with_logprobs_covers_prompt_tokens(client: openai.OpenAI) -> None:
    response = complete(client, echo=True, logprobs=1, max_tokens=3, extra_body={"ignore_eos": True})
    logprobs = response.choices[0].logprobs
    assert len(logprobs.tokens) == response.usage.prompt_tokens + 3
    assert logprobs.token_logprobs[0] is None
    joined, text = spelled(logprobs.tokens, response.choices[0].text)
    assert joined == text


def test_stream_matches_non_streamed_text_and_ends_with_usage(client: openai.OpenAI) -> None:
    chunks = list(complete(client, stream=True, stream_options={"include_usage": True}))
    text = "".join(chunk.choices[0].text for chunk in chunks if chunk.choices)
    assert text == complete(client).choices[0].text
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens > 0


def test_streamed_list_of_prompts_with_echo(client: openai.OpenAI) -> None:
    prompts = [PROMPT, "Other words"]
    chunks = list(complete(client, prompt=prompts, echo=True, stream=True, max_tokens=6))
    texts = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert texts[0] == PROMPT + complete(client, max_tokens=6).choices[0].text
    assert texts[1].startswith("Other words")


def test_stop_and_seed(client: openai.OpenAI) -> None:
    full = complete(client, max_tokens=40).choices[0].text
    stop = full[12:15]
    stopped = complete(client, max_tokens=40, stop=[stop]).choices[0]
    assert (stopped.text, stopped.finish_reason) == (full[: full.index(stop)], "stop")
    sampled = [complete(client, temperature=1.0, seed=42).choices[0].text for _ in range(2)]
    assert sampled[0] == sampled[1]
