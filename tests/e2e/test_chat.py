"""Chat completions through the official OpenAI client against the real server."""

from __future__ import annotations

import json

import openai
import pytest

from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.e2e
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say something."}]


def greedy(client: openai.OpenAI, **overrides) -> str:
    params = {"model": MODEL, "messages": MESSAGES, "max_tokens": 24, "temperature": 0, **overrides}
    return client.chat.completions.create(**params).choices[0].message.content


def test_chat_completion_has_choice_usage_and_finish_reason(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0)
    assert response.object == "chat.completion"
    assert response.model == MODEL
    (choice,) = response.choices
    assert choice.message.role == "assistant"
    assert choice.finish_reason in {"stop", "length"}
    assert response.usage.prompt_tokens > 0
    assert 0 < response.usage.completion_tokens <= 8
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_max_tokens_caps_output_with_finish_reason_length(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=5, temperature=0, extra_body={"ignore_eos": True}
    )
    assert response.usage.completion_tokens == 5
    assert response.choices[0].finish_reason == "length"


def test_max_completion_tokens_is_honoured_over_max_tokens(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=20,
        max_completion_tokens=3,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert response.usage.completion_tokens == 3


def test_temperature_zero_is_deterministic(client: openai.OpenAI) -> None:
    assert greedy(client) == greedy(client)


def test_stream_concatenates_to_the_non_streamed_text_and_ends_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == greedy(client)
    finish = [
        chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason
    ]
    assert finish in (["stop"], ["length"])
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage.completion_tokens > 0
    assert (
        usage_chunk.usage.total_tokens
        == usage_chunk.usage.prompt_tokens + usage_chunk.usage.completion_tokens
    )
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_stream_without_include_usage_sends_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, stream=True))
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)


def test_n_returns_that_many_choices(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=6,
        n=3,
        temperature=1.0,
        seed=7,
        extra_body={"ignore_eos": True},
    )
    assert sorted(choice.index for choice in response.choices) == [0, 1, 2]
    assert response.usage.completion_tokens == 3 * 6


def test_n_streamed_covers_every_index(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=6, n=2, temperature=1.0, seed=3, stream=True
        )
    )
    finished = [choice.index for chunk in chunks for choice in chunk.choices if choice.finish_reason]
    assert sorted(finished) == [0, 1]


def test_seed_makes_sampling_repeatable(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        return greedy(client, temperature=1.0, seed=seed)

    assert sample(11) == sample(11)
    assert len({sample(11), sample(12), sample(13)}) > 1


def test_tiny_top_p_reduces_sampling_to_greedy(client: openai.OpenAI) -> None:
    assert greedy(client, temperature=1.0, top_p=1e-6, seed=5) == greedy(client)


def test_stop_string_cuts_output_before_it(client: openai.OpenAI) -> None:
    full = greedy(client, max_tokens=40)
    stop = full[10:13]
    assert stop
    assert stop in full
    response = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=40, temperature=0, stop=stop
    )
    assert response.choices[0].finish_reason == "stop"
    assert response.choices[0].message.content == full[: full.index(stop)]


def test_stop_list_stops_at_the_first_match(client: openai.OpenAI) -> None:
    full = greedy(client, max_tokens=40)
    stops = [full[20:23], full[8:11]]
    content = (
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=40, temperature=0, stop=stops
        )
        .choices[0]
        .message.content
    )
    assert content == full[: min(full.index(s) for s in stops)]


@pytest.mark.parametrize("field", ["presence_penalty", "frequency_penalty"])
def test_penalties_change_greedy_output(client: openai.OpenAI, field: str) -> None:
    assert greedy(client, max_tokens=64, **{field: 2.0}) != greedy(client, max_tokens=64, **{field: -2.0})


def test_logprobs_and_top_logprobs(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=6,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        extra_body={"ignore_eos": True},
    )
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens == 6
    for entry in content:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 3
        # Greedy: the sampled token is the most likely one.
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)
        assert [t.logprob for t in entry.top_logprobs] == sorted(
            (t.logprob for t in entry.top_logprobs), reverse=True
        )
    # A token that ends inside a UTF-8 character has no text of its own; the content shows U+FFFD there.
    assert "".join(entry.token for entry in content) == response.choices[0].message.content.replace(
        "\ufffd", ""
    )


def test_response_format_json_schema_constrains_output(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=30,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "verdict", "schema": {"type": "string", "enum": ["yes", "no"]}},
        },
    )
    assert json.loads(response.choices[0].message.content) in {"yes", "no"}
    assert response.choices[0].finish_reason == "stop"


def test_response_format_json_object_starts_an_object(client: openai.OpenAI) -> None:
    unconstrained = greedy(client, max_tokens=8)
    response = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0, response_format={"type": "json_object"}
    )
    text = response.choices[0].message.content
    assert text.lstrip().startswith("{")
    assert text != unconstrained


def test_user_field_is_accepted(client: openai.OpenAI) -> None:
    assert client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2, user="alice").choices


def test_content_parts_are_joined_like_a_plain_string(client: openai.OpenAI) -> None:
    parts = [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "something."}],
        },
    ]
    assert greedy(client, messages=parts) == greedy(client)
