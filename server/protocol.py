"""Pydantic wire models of the OpenAI chat and completions requests; the answers' are in `server.answers`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, Tag, model_validator
from pydantic_core import PydanticCustomError

from server.request_fields import (
    ChatTool,
    HistoryToolCall,
    Metadata,
    ResponseFormat,
    StrictModel,
    StructuredOutputs,
    TemplateKwargs,
    ToolChoice,
    check_tool_choice,
    refuse_non_text_parts,
)
from server.tiers import RequestedTier, Tier, served_tier
from server.unencodable import INVALID_ENCODING, first_unencodable

# Fields OpenAI documents that this server does not implement: a request naming one gets a 400 that
# says which, instead of being silently ignored.
UNSUPPORTED_CHAT_FIELDS = frozenset(
    {
        "functions",
        "function_call",
        "logit_bias",
        "audio",
        "modalities",
        "prediction",
        "web_search_options",
        "reasoning_effort",
    }
)
UNSUPPORTED_COMPLETION_FIELDS = frozenset({"best_of", "logit_bias", "suffix"})
# Counts beyond this reach no model's context; larger integers cannot even be sent to vLLM's engine.
INT32_MAX = 2**31 - 1


class RequestBody(BaseModel):
    """A request body: no string anywhere in it, key or value, may hold text UTF-8 cannot encode.

    Checked once on the whole parsed body, before its fields are validated, so every field of every
    body is covered, including free-form ones (a JSON schema) and unknown keys.
    """

    @model_validator(mode="before")
    @classmethod
    def _encodable(cls, data: Any) -> Any:
        found = first_unencodable(data)
        if found is not None:
            param, code_point = found
            raise PydanticCustomError(
                INVALID_ENCODING,
                "{param}: holds {code_point}, a lone surrogate, which is not text and cannot be encoded "
                "as UTF-8; send valid Unicode",
                {"param": param, "code_point": code_point},
            )
        return data


class StreamOptions(StrictModel):
    """`stream_options` of a streamed request."""

    include_usage: bool = False
    continuous_usage_stats: bool = False


class SamplingFields(StrictModel, RequestBody):
    """Sampling fields shared by chat and completions, with OpenAI's ranges; the base of both bodies."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # vLLM's extensions, kept so benchmark clients written for vLLM work unchanged.
    top_k: int | None = Field(default=None, ge=-1, le=INT32_MAX)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=2.0)
    min_tokens: int = Field(default=0, ge=0, le=INT32_MAX)
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    structured_outputs: StructuredOutputs | None = None
    # OpenAI's service tiers (`server.tiers`): `auto` and `default` are served alike.
    service_tier: RequestedTier | None = None

    @model_validator(mode="after")
    def _check_stop_and_stream(self) -> SamplingFields:
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop must be a non-empty string or a list of up to 4 non-empty strings")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    @property
    def stop_list(self) -> list[str]:
        """The stop strings as a list."""
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def tier(self) -> Tier:
        """The service tier the request is served in (`auto` and unset are `default`)."""
        return served_tier(self.service_tier)

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def continuous_usage(self) -> bool:
        """Whether every streamed chunk carries the usage so far (vLLM's `continuous_usage_stats`)."""
        return self.include_usage and self.stream_options.continuous_usage_stats


class TextPart(StrictModel):
    """A text content part of a chat message."""

    type: Literal["text"]
    text: str


class ImageUrl(StrictModel):
    """Where an image part's image is: a `data:` URL, or a URL vLLM's media settings allow it to fetch."""

    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(StrictModel):
    """An image content part, for a model that takes images."""

    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(StrictModel):
    """One message of a chat conversation."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[HistoryToolCall] | None = None  # an assistant turn's calls
    tool_call_id: str | None = None  # a tool turn: the call it answers
    # What an answer's message carries, so a client can send it back as it came (as OpenAI's guide does);
    # neither is rendered.
    refusal: str | None = None
    reasoning: str | None = None

    @model_validator(mode="after")
    def _tool_fields_in_place(self) -> ChatMessage:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("tool_calls belong to assistant messages")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        if self.tool_call_id is not None and self.role != "tool":
            raise ValueError("tool_call_id belongs to tool messages")
        return self

    @property
    def text(self) -> str:
        """The message's text, with its text parts joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    @property
    def image_positions(self) -> list[int]:
        """Where in `content` the image parts are."""
        if not isinstance(self.content, list):
            return []
        return [position for position, part in enumerate(self.content) if isinstance(part, ImagePart)]

    def for_template(self) -> dict[str, Any]:
        """The message as the chat template takes it: text as a string, or OpenAI's parts with images."""
        message: dict[str, Any] = {"role": self.role, "content": self.text}
        if self.image_positions:
            message["content"] = [part.model_dump(exclude_none=True) for part in self.content or ()]
        if self.tool_calls:
            # Arguments stay JSON text: vLLM's renderer parses them for the template, as for vllm serve.
            message["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


class ChatCompletionRequest(SamplingFields):
    """Body of `POST /v1/chat/completions`."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    chat_template_kwargs: TemplateKwargs | None = None
    # OpenAI's bookkeeping fields: accepted, never stored (this server keeps no completions).
    metadata: Metadata | None = None
    store: bool | None = None
    tools: list[ChatTool] | None = Field(default=None, min_length=1)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True
    include_reasoning: bool = True  # vLLM's: with a reasoning parser, whether answers carry `reasoning`

    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, data: Any) -> Any:
        refuse_non_text_parts(data)
        return data

    @model_validator(mode="after")
    def _check_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        constrained = self.response_format is not None and self.response_format.type != "text"
        if self.structured_outputs is not None and constrained:
            raise ValueError("give structured_outputs or a response_format other than text, not both")
        check_tool_choice(self.tools, self.tool_choice)
        if self.forces_tool_call and (constrained or self.structured_outputs is not None):
            # A forced call is itself a structured-output constraint; there can be one (as in vLLM).
            raise ValueError("a required or named tool_choice cannot be combined with another output format")
        return self

    @property
    def effective_tool_choice(self) -> str | dict[str, Any]:
        """OpenAI's default: `auto` when there are tools, `none` without."""
        if not self.tools:
            return "none"
        if self.tool_choice is None:
            return "auto"
        return self.tool_choice if isinstance(self.tool_choice, str) else self.tool_choice.model_dump()

    @property
    def forces_tool_call(self) -> bool:
        """Whether the model must call a tool (`required` or a named function)."""
        return bool(self.tools) and self.tool_choice not in (None, "none", "auto")

    @property
    def max_output_tokens(self) -> int | None:
        """`max_completion_tokens`, OpenAI's current name, wins over the older `max_tokens`."""
        return self.max_completion_tokens or self.max_tokens


TokenIds = Annotated[list[Annotated[int, Field(ge=0, le=INT32_MAX)]], Field(min_length=1)]


class CompletionRequest(SamplingFields):
    """Body of `POST /v1/completions`: a prompt is text or token ids, one or a list, as OpenAI allows."""

    prompt: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1)]
    )
    max_tokens: int | None = Field(default=16, ge=1, le=INT32_MAX)
    echo: bool = False
    # vLLM's bound (its default `--max-logprobs`), above OpenAI's 5.
    logprobs: int | None = Field(default=None, ge=0, le=20)

    @property
    def prompts(self) -> list[str | list[int]]:
        """The prompt or prompts as a list (each text or token ids)."""
        if isinstance(self.prompt, str) or isinstance(self.prompt[0], int):
            return [self.prompt]
        return list(self.prompt)

    @property
    def max_output_tokens(self) -> int | None:
        """The requested output length."""
        return self.max_tokens


class TokenizeCompletionRequest(StrictModel, RequestBody):
    """`POST /tokenize` with a prompt, as vLLM's server takes it."""

    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool = False


class TokenizeChatRequest(StrictModel, RequestBody):
    """`POST /tokenize` with chat messages: what the chat template renders them to, as vLLM takes it."""

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    add_generation_prompt: bool = True
    chat_template_kwargs: TemplateKwargs | None = None
    return_token_strs: bool = False

    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, data: Any) -> Any:
        refuse_non_text_parts(data)
        return data


def _tokenize_kind(data: Any) -> str:
    return "chat" if isinstance(data, dict) and "messages" in data else "prompt"


# One body, told apart by its `messages` key as vLLM does, so a bad one gets the errors of its own kind.
TokenizeRequest = Annotated[
    Annotated[TokenizeChatRequest, Tag("chat")] | Annotated[TokenizeCompletionRequest, Tag("prompt")],
    Discriminator(_tokenize_kind),
]


class DetokenizeRequest(StrictModel, RequestBody):
    """`POST /detokenize`: token ids back to text."""

    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0, le=INT32_MAX)]]
