"""Hostile request bodies: unencodable text, too many messages, answers too large, prompts too long."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from vllm.config import ModelConfig
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest as VllmChatRequest
from vllm.entrypoints.openai.completion.protocol import CompletionRequest as VllmCompletionRequest
from vllm.exceptions import VLLMValidationError

from server.engine.boundary_errors import prompt_length
from server.engine.vllm_engine import VllmEngine
from server.errors import (
    ContextLengthError,
    ResponseTooLargeError,
    TooManyMessagesError,
    error_body,
)
from server.protocol import ChatCompletionRequest
from server.serving.prepare import chat_chars, check_chat_messages, check_response_size
from server.unencodable import INVALID_ENCODING, first_unencodable, printable

SURROGATE = "\ud800"


@pytest.mark.parametrize(
    ("body", "param", "code_point"),
    [
        ({"stop": SURROGATE}, "stop", "U+D800"),
        ({"stop": ["ok", "a" + SURROGATE]}, "stop.1", "U+D800"),
        (
            {"messages": [{"role": "user", "content": "hi"}, {"role": "user", "name": SURROGATE}]},
            "messages.1.name",
            "U+D800",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "ok\udfff"}]}]},
            "messages.0.content.0.text",
            "U+DFFF",
        ),
        (
            {"response_format": {"json_schema": {"schema": {"properties": {SURROGATE: {}}}}}},
            "response_format.json_schema.schema.properties.\\ud800",
            "U+D800",
        ),
        ({SURROGATE: 1}, "\\ud800", "U+D800"),
    ],
)
def test_the_first_unencodable_text_is_found_with_its_path(body: dict, param: str, code_point: str) -> None:
    assert first_unencodable(body) == (param, code_point)


def test_valid_unicode_anywhere_passes() -> None:
    body = {
        "messages": [{"role": "user", "content": "héllo 😀 \u2028", "name": "名前"}],
        "stop": ["\U0010ffff"],
    }
    assert first_unencodable(body) is None
    assert first_unencodable([1, 2.5, None, True]) is None


def test_the_first_in_document_order_is_reported() -> None:
    assert first_unencodable({"model": "m", "stop": SURROGATE, "user": SURROGATE})[0] == "stop"


def test_a_body_model_refuses_unencodable_text_before_its_fields_are_validated() -> None:
    # The body is also invalid otherwise (no messages): the encoding is what is reported.
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest.model_validate({"model": "m", "stop": SURROGATE})
    (error,) = caught.value.errors()
    assert error["type"] == INVALID_ENCODING
    assert error["ctx"]["param"] == "stop"
    assert "U+D800" in error["msg"]


def test_error_bodies_are_always_encodable() -> None:
    body = error_body(f"No model named '{SURROGATE}'.", "invalid_request_error", f"a.{SURROGATE}", None)
    encoded = json.dumps(body, ensure_ascii=False).encode()
    assert json.loads(encoded)["error"] == {
        "message": "No model named '\\ud800'.",
        "type": "invalid_request_error",
        "param": "a.\\ud800",
        "code": None,
    }
    assert printable("plain ✓") == "plain ✓"


def test_a_chat_of_too_many_messages_is_refused_naming_messages() -> None:
    check_chat_messages(4, 4)
    with pytest.raises(TooManyMessagesError) as caught:
        check_chat_messages(5, 4)
    assert (caught.value.param, caught.value.code) == ("messages", "array_above_max_length")


def test_chat_characters_count_every_field_the_template_may_render() -> None:
    body = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "abc", "name": "nm"},
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "de"}, {"type": "text", "text": "f"}],
                },
                {"role": "system"},
            ],
        }
    )
    assert chat_chars(body) == (4 + 3 + 2) + (9 + 3) + 6


@pytest.mark.parametrize(
    ("prompts", "n", "max_tokens", "alternatives", "param"),
    [
        (1, 1, 101, 0, "max_tokens"),
        (1, 3, 40, 0, "n"),
        (3, 1, 40, 0, "prompt"),
        (1, 2, 40, 1, "top_logprobs"),
    ],
)
def test_an_answer_over_the_cap_names_the_parameter_that_pushes_it_over(
    prompts: int, n: int, max_tokens: int, alternatives: int, param: str
) -> None:
    with pytest.raises(ResponseTooLargeError) as caught:
        check_response_size(
            prompts,
            n,
            max_tokens,
            alternatives,
            100,
            max_tokens_param="max_tokens",
            alternatives_param="top_logprobs",
        )
    assert (caught.value.param, caught.value.code) == (param, "response_too_large")
    assert "--max-response-tokens" in caught.value.message


def test_an_answer_at_the_cap_is_accepted() -> None:
    check_response_size(2, 2, 5, 4, 100, max_tokens_param="max_tokens", alternatives_param="logprobs")


@pytest.mark.parametrize("parameter", ["input_tokens", "input_text"])
def test_vllms_prompt_length_refusal_is_context_length_exceeded_naming_our_field(parameter: str) -> None:
    with pytest.raises(ContextLengthError) as caught, prompt_length("messages"):
        raise VLLMValidationError("This model's maximum context length is 8 tokens.", parameter=parameter)
    assert caught.value.param == "messages"
    assert caught.value.message == "This model's maximum context length is 8 tokens."


def test_other_vllm_refusals_pass_through() -> None:
    with pytest.raises(VLLMValidationError), prompt_length("prompt"):
        raise VLLMValidationError("bad", parameter="truncation_side")


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_prompt_length_is_checked_as_vllms_server_checks_it(add_special_tokens: bool) -> None:
    engine = object.__new__(VllmEngine)
    engine.max_model_len = 1024
    ours = engine._tokenize_params(add_special_tokens)
    model_config = object.__new__(ModelConfig)
    model_config.max_model_len = 1024
    for request in (
        VllmChatRequest(model="m", messages=[{"role": "user", "content": "hi"}]),
        VllmCompletionRequest(model="m", prompt="hi", max_tokens=None),
    ):
        theirs = request.build_tok_params(model_config)
        assert (ours.max_total_tokens, ours.max_total_tokens_param) == (
            theirs.max_total_tokens,
            theirs.max_total_tokens_param,
        )
        assert ours.get_encode_kwargs()["max_length"] == theirs.get_encode_kwargs()["max_length"] == 1025
