"""Large answers serialised in pieces: exactly the bytes pydantic gives in one call."""

from __future__ import annotations

import math

import pytest

from server.answers import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionResponse,
    ChatLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    CompletionResponse,
    EnergyUsage,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from server.api.json_body import LARGE_BODY_BYTES, PIECE_ITEMS, dump_in_pieces, serialize

USAGE = Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5, service_tier="default")


def token(index: int) -> TokenLogprob:
    logprob = -math.inf if index % 7 == 0 else -index / 3
    tops = [TopLogprob(token=f't{j}é\n"', logprob=-j / 7, bytes=[116, j]) for j in range(5)]
    return TokenLogprob(token=f"tok{index}\u2028", logprob=logprob, bytes=None, top_logprobs=tops)


@pytest.mark.parametrize("tokens", [0, 3, PIECE_ITEMS, PIECE_ITEMS + 1, 3 * PIECE_ITEMS + 17])
def test_a_chat_answer_in_pieces_is_byte_for_byte_pydantics(tokens: int) -> None:
    content = [token(i) for i in range(tokens)]
    choices = [
        ChatChoice(
            index=i,
            message=AssistantMessage(role="assistant", content="x" * tokens),
            logprobs=ChatLogprobs(content=content) if i else None,
            finish_reason="length",
        )
        for i in range(2)
    ]
    body = ChatCompletionResponse(id="chatcmpl-1", model="m", choices=choices, usage=USAGE)
    assert dump_in_pieces(body) == body.model_dump_json().encode()


@pytest.mark.parametrize("tokens", [0, PIECE_ITEMS + 1, 2 * PIECE_ITEMS + 5])
def test_a_completion_answer_in_pieces_is_byte_for_byte_pydantics(tokens: int) -> None:
    logprobs = CompletionLogprobs(
        tokens=[f"t{i}" for i in range(tokens)],
        token_logprobs=[None if i == 0 else -math.inf if i % 5 == 0 else -i / 9 for i in range(tokens)],
        top_logprobs=[None if i == 0 else {f"a{i}": -0.5, "b": -1.25} for i in range(tokens)],
        text_offset=list(range(tokens)),
    )
    energy = EnergyUsage(
        joules=1.5, dynamic_joules=0.5, joules_per_output_token=None, co2e_grams=0.1, source="estimated"
    )
    body = CompletionResponse(
        id="cmpl-1",
        model="m",
        choices=[CompletionChoice(index=0, text="hello", logprobs=logprobs, finish_reason="stop")],
        usage=USAGE.model_copy(update={"energy": energy}),
    )
    assert dump_in_pieces(body) == body.model_dump_json().encode()


async def test_small_and_large_answers_serialise_to_the_same_bytes_by_either_path() -> None:
    body = ChatCompletionResponse(
        id="chatcmpl-1",
        model="m",
        choices=[
            ChatChoice(
                index=0,
                message=AssistantMessage(role="assistant", content="hi"),
                logprobs=ChatLogprobs(content=[token(i) for i in range(600)]),
                finish_reason="stop",
            )
        ],
        usage=USAGE,
    )
    expected = body.model_dump_json().encode()
    assert await serialize(body, 10) == expected
    assert await serialize(body, LARGE_BODY_BYTES) == expected
