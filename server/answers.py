"""Pydantic wire models of what the server answers: OpenAI's bodies, chunks, usage, model cards, errors.

Usage carries energy where the server meters it. The requests' models are in `server.protocol`.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, Field


def _absent(value: object) -> bool:
    return value is None


def _empty(value: list[Any] | None) -> bool:
    return not value


class EnergyUsage(BaseModel):
    """The energy of one response; `source` says how it was obtained ("estimated" is not a measurement).

    `joules` is the response's full share of the metered energy (its part of the idle floor while it ran,
    plus what its work added); `dynamic_joules` is only what its work added above the floor.
    """

    joules: float
    dynamic_joules: float
    joules_per_output_token: float | None
    co2e_grams: float
    source: str
    # With a reasoning parser: the part of `joules` that went to reasoning tokens (a share by token count).
    reasoning_joules: float | None = Field(default=None, exclude_if=_absent)
    # A flex request the carbon gate held for a cleaner grid: the grams running it at arrival would have
    # added. Absent for a request that was not held.
    co2e_avoided_grams: float | None = Field(default=None, exclude_if=_absent)


class PromptTokensDetails(BaseModel):
    """`usage.prompt_tokens_details`: prompt tokens the prefix cache served."""

    cached_tokens: int


class CompletionTokensDetails(BaseModel):
    """`usage.completion_tokens_details`: generated tokens that were reasoning (with a reasoning parser)."""

    reasoning_tokens: int


class Usage(BaseModel):
    """Token counts (and energy, when metered) of one response, and the tier that served it.

    OpenAI's schema has the details as objects, never null: absent when not counted.
    """

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = Field(default=None, exclude_if=_absent)
    completion_tokens_details: CompletionTokensDetails | None = Field(default=None, exclude_if=_absent)
    service_tier: str | None = None
    energy: EnergyUsage | None = None


class TopLogprob(BaseModel):
    """One alternative token with its log probability."""

    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    """A sampled token with its log probability and the top alternatives."""

    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    """Chat `logprobs`: one entry per generated token."""

    content: list[TokenLogprob]
    refusal: list[TokenLogprob] | None = None  # required (nullable) by OpenAI's schema; never a refusal here


class CompletionLogprobs(BaseModel):
    """Legacy completions `logprobs`."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CalledFunction(BaseModel):
    """The function a tool call calls, with its arguments as JSON text."""

    name: str
    arguments: str


class ToolCall(BaseModel):
    """A tool call of an assistant message."""

    id: str
    type: Literal["function"] = "function"
    function: CalledFunction


class FunctionFragment(BaseModel):
    """A streamed piece of a call's function: its name once, then argument text."""

    name: str | None = Field(default=None, exclude_if=_absent)
    arguments: str | None = Field(default=None, exclude_if=_absent)


class ToolCallChunk(BaseModel):
    """A streamed piece of a tool call; the first piece of a call carries its id, type and name."""

    index: int
    id: str | None = Field(default=None, exclude_if=_absent)
    type: Literal["function"] | None = Field(default=None, exclude_if=_absent)
    function: FunctionFragment


class AssistantMessage(BaseModel):
    """The assistant message of a chat choice."""

    role: str = "assistant"  # --response-role may name another
    content: str | None
    refusal: str | None = None  # required by OpenAI's schema; this server never refuses in words
    tool_calls: list[ToolCall] = Field(default_factory=list, exclude_if=_empty)
    reasoning: str | None = Field(default=None, exclude_if=_absent)  # vLLM's name, with a reasoning parser


class ChatChoice(BaseModel):
    """One choice of a chat completion."""

    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None
    stop_reason: int | str | None = None  # vLLM's: the stop string or token id that ended the choice


class ChatCompletionResponse(BaseModel):
    """Body of a non-streamed chat completion."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    service_tier: str | None = None
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    """The incremental message of a streamed chat chunk.

    Only a choice's first chunk names the role; OpenAI's schema has no null role, so others omit it.
    """

    role: str | None = Field(default=None, exclude_if=_absent)
    content: str | None = None
    reasoning: str | None = Field(default=None, exclude_if=_absent)
    tool_calls: list[ToolCallChunk] | None = Field(default=None, exclude_if=_absent)


class ChatChunkChoice(BaseModel):
    """One choice of a streamed chat chunk."""

    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = Field(default=None, exclude_if=_absent)  # on the finishing chunk


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    service_tier: str | None = None
    # As vLLM streams it: on the last chunk only, so the per-token chunks stay short.
    system_fingerprint: str | None = Field(default=None, exclude_if=_absent)
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    """One choice of a completion (streamed or not)."""

    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None
    stop_reason: int | str | None = Field(default=None, exclude_if=_absent)  # when it finished


class CompletionResponse(BaseModel):
    """Body of a completion, or one chunk of a streamed one."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    service_tier: str | None = None
    system_fingerprint: str | None = Field(default=None, exclude_if=_absent)  # streamed: on the last chunk
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    """One entry of `GET /v1/models`."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "wattserve"
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None


class ModelList(BaseModel):
    """Body of `GET /v1/models`."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    """The `error` member of OpenAI's error body."""

    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body."""

    error: ErrorDetail


class TokenizeResponse(BaseModel):
    """Body of `POST /tokenize`, as vLLM's server answers."""

    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeResponse(BaseModel):
    """Body of `POST /detokenize`."""

    prompt: str
