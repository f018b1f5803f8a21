"""Turn validated OpenAI requests into prompts and a sampling spec, with the length and size checks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from server.engine.protocol import EngineClient
from server.engine.types import PreparedPrompt, SamplingSpec
from server.errors import (
    ContextLengthError,
    GrammarTooComplexError,
    InvalidRequestError,
    ResponseTooLargeError,
    TooManyMessagesError,
    UnsupportedContentPartError,
)
from server.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    SamplingFields,
    TokenizeChatRequest,
)
from server.request_fields import StructuredOutputs
from server.serving.schema_limits import SchemaLimits, check_constraint_limits, check_schema_limits
from server.serving.tools import check_tools, output_parsing, template_tools, tool_chars
from server.unencodable import first_unencodable

if TYPE_CHECKING:
    from server.engine.output_parsing import RequestParsing


@dataclass(frozen=True)
class InputLimits:
    """What one request may hold and ask for, each checked before its part of the work starts."""

    prompt_chars: int  # all prompts of a request, or every field of every chat message, together
    chat_messages: int
    response_tokens: int  # n x max_tokens x (1 + top_logprobs), over all prompts
    schema: SchemaLimits = SchemaLimits()  # a response_format JSON schema's size
    tools: int = 128  # functions in one request's `tools` (OpenAI's bound)


def resolve_max_tokens(prompt_tokens: int, requested: int | None, max_model_len: int, what: str) -> int:
    """Check the prompt plus the requested output fit the context; default to what is left.

    Raises:
        ContextLengthError: They do not fit.
    """
    if requested is None:
        requested = max_model_len - prompt_tokens
        if requested >= 1:
            return requested
        requested = 1
    if prompt_tokens + requested > max_model_len:
        raise ContextLengthError(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{prompt_tokens + requested} tokens ({prompt_tokens} in the {what}, {requested} in the "
            f"completion). Please reduce the length of the {what} or completion.",
            param="messages" if what == "messages" else "prompt",
        )
    return requested


def _spec(
    body: SamplingFields,
    max_tokens: int,
    *,
    logprobs: int | None,
    prompt_logprobs: int | None,
    constraint: dict[str, Any],
) -> SamplingSpec:
    return SamplingSpec(
        max_tokens=max_tokens,
        n=body.n,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        min_p=body.min_p,
        seed=body.seed,
        stop=body.stop_list,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        repetition_penalty=body.repetition_penalty,
        min_tokens=body.min_tokens,
        ignore_eos=body.ignore_eos,
        skip_special_tokens=body.skip_special_tokens,
        include_stop_str_in_output=body.include_stop_str_in_output,
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        **constraint,
    )


async def _checked_schema(
    engine: EngineClient, schema: dict[str, Any], limits: SchemaLimits, param: str
) -> None:
    serialized = check_schema_limits(schema, limits, param)
    try:
        await engine.check_grammar(serialized)
    except GrammarTooComplexError as err:
        if err.param == param:
            raise
        raise GrammarTooComplexError(err.message.replace("response_format", param, 1), param=param) from err


async def structured_constraint(
    engine: EngineClient, outputs: StructuredOutputs, limits: SchemaLimits
) -> dict[str, Any]:
    """The spec fields for vLLM's `structured_outputs`, bounded as `response_format` schemas are.

    A JSON schema goes through the same size caps and compile gate; a regex, grammar or choice list
    through the size caps (a regex's compile has vLLM's own deadline, `VLLM_REGEX_COMPILATION_TIMEOUT_S`).

    Raises:
        InvalidRequestError: A `json` string that is not a JSON object.
        SchemaTooLargeError, GrammarTooComplexError: As for `response_format`, naming the field.
    """
    fields: dict[str, Any] = {"structured_options": outputs.options, "structured_param": "structured_outputs"}
    if outputs.json_object:
        fields["json_object"] = True
    elif outputs.json_ is not None:
        schema = outputs.json_
        if isinstance(schema, str):
            schema = _json_object(schema, "structured_outputs.json")
        await _checked_schema(engine, schema, limits, "structured_outputs.json")
        fields["json_schema"] = schema
    else:
        for name in ("regex", "grammar", "choice"):
            value = getattr(outputs, name)
            if value is not None:
                check_constraint_limits(value, limits, f"structured_outputs.{name}")
                fields[name] = value
    return fields


def _json_object(text: str, param: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError) as err:  # nesting too deep for the parser is no schema either
        raise InvalidRequestError(f"{param}: not valid JSON: {err}", param=param) from err
    if not isinstance(parsed, dict):
        raise InvalidRequestError(f"{param}: a JSON schema must be an object", param=param)
    # Escapes inside the string were never seen by the body's encoding check.
    if first_unencodable(parsed) is not None:
        raise InvalidRequestError(f"{param}: holds a lone surrogate, which is not text", param=param)
    return parsed


def check_prompt_chars(chars: int, limit: int, what: str) -> None:
    """Refuse prompts too long to fit the context before they are rendered or tokenized.

    Rendering and tokenizing run in vLLM's renderer pool (one thread by default): megabytes of prompt
    would hold every other request's rendering up for seconds, whether in one prompt or spread over a
    request's many. The limit is far above what fits the context, so only requests that could never be
    served are refused here.

    Raises:
        ContextLengthError: `chars` is over `limit`.
    """
    if chars > limit:
        raise ContextLengthError(
            f"The {what} hold {chars} characters in all, more than this server accepts ({limit}, see "
            f"--max-prompt-chars); they cannot fit the model's context.",
            param="messages" if what == "messages" else "prompt",
        )


def check_chat_messages(count: int, limit: int) -> None:
    """Refuse a chat of more messages than the server renders, before the template runs.

    The template renders every message, empty or not, on the renderer's thread: hundreds of thousands
    of empty messages hold no characters yet take seconds to render.

    Raises:
        TooManyMessagesError: `count` is over `limit`.
    """
    if count > limit:
        raise TooManyMessagesError(
            f"messages: this chat has {count} messages; this server renders at most {limit} "
            f"(--max-chat-messages).",
            param="messages",
        )


def template_messages(engine: EngineClient, messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """The messages as the chat template takes them; images only for a model that takes them.

    Raises:
        UnsupportedContentPartError: An image part for a text-only model, naming the part.
    """
    if not engine.accepts_images:
        for index, message in enumerate(messages):
            for position in message.image_positions:
                raise UnsupportedContentPartError(
                    f"messages.{index}.content.{position}: 'image_url' content parts are not supported: "
                    "the served model takes text only",
                    param=f"messages.{index}.content.{position}",
                )
    return [message.for_template() for message in messages]


def chat_chars(body: ChatCompletionRequest | TokenizeChatRequest) -> int:
    """Characters of every field the chat template may render (role, name, content parts, extra kwargs)."""
    total = len(json.dumps(body.chat_template_kwargs)) if body.chat_template_kwargs else 0
    for message in body.messages:
        total += len(message.role) + len(message.name or "")
        if isinstance(message.content, str):
            total += len(message.content)
        elif message.content is not None:
            total += len(message.text)
    return total


def check_response_size(
    prompts: int,
    n: int,
    max_tokens: int,
    alternatives: int,
    limit: int,
    *,
    max_tokens_param: str,
    alternatives_param: str,
) -> None:
    """Refuse a request whose answer could hold more tokens and log probabilities than `limit`.

    A whole answer is serialized at once: 32 choices of 600 tokens with 20 alternatives each is 27 MB
    of JSON. The param named is the first, in the order max_tokens, n, prompt, logprobs, whose
    product goes over the limit.

    Raises:
        ResponseTooLargeError: `prompts` x `n` x `max_tokens` x (1 + `alternatives`) is over `limit`.
    """
    entries = prompts * n * max_tokens * (1 + alternatives)
    if entries <= limit:
        return
    if max_tokens > limit:
        param = max_tokens_param
    elif n * max_tokens > limit:
        param = "n"
    elif prompts * n * max_tokens > limit:
        param = "prompt"
    else:
        param = alternatives_param
    raise ResponseTooLargeError(
        f"{param}: this request may produce {entries} tokens and log probabilities ({prompts} prompt(s) "
        f"x n={n} x {max_tokens_param}={max_tokens} x (1 + {alternatives_param}={alternatives})); one "
        f"answer may hold at most {limit} (--max-response-tokens). Ask for less.",
        param=param,
    )


def check_sequences(prompts: int, n: int, max_num_seqs: int) -> None:
    """Refuse a request that would need more sequences than the engine's whole batch.

    One request holds one admission slot, whatever it asks for; without this bound a list of prompts
    (or a large `n`) would put thousands of sequences into the engine past admission control.

    Raises:
        InvalidRequestError: `prompts` × `n` is over `max_num_seqs`.
    """
    if prompts * n > max_num_seqs:
        raise InvalidRequestError(
            f"This request asks for {prompts * n} sequences ({prompts} prompt(s) x n={n}); one request "
            f"may run at most {max_num_seqs}, the engine's batch (--max-num-seqs). Split it up.",
            param="prompt" if prompts > 1 else "n",
        )


async def prepare_chat(
    engine: EngineClient, body: ChatCompletionRequest, limits: InputLimits
) -> tuple[PreparedPrompt, SamplingSpec, RequestParsing | None]:
    """Template and tokenize a chat request, check its sizes and build its sampling spec.

    Returns:
        The prompt, the sampling spec, and how the output is to be read (None: as plain text).
    """
    check_sequences(1, body.n, engine.max_num_seqs)
    check_chat_messages(len(body.messages), limits.chat_messages)
    check_prompt_chars(chat_chars(body) + tool_chars(body), limits.prompt_chars, "messages")
    check_tools(body, engine.output_parsers, limits.tools, limits.schema)
    messages = template_messages(engine, body.messages)
    template_kwargs = body.chat_template_kwargs
    tools = template_tools(body)
    if tools is not None:  # how vLLM hands a chat template its tools
        template_kwargs = {**(template_kwargs or {}), "tools": tools}
    prompt = await engine.render_chat(messages, template_kwargs)
    max_tokens = resolve_max_tokens(
        len(prompt.token_ids), body.max_output_tokens, engine.max_model_len, "messages"
    )
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    check_response_size(
        1,
        body.n,
        max_tokens,
        logprobs or 0,
        limits.response_tokens,
        max_tokens_param="max_completion_tokens" if body.max_completion_tokens else "max_tokens",
        alternatives_param="top_logprobs",
    )
    parsing = output_parsing(body, engine.output_parsers)
    # Last, so a request refused for anything else costs no compile.
    constraint: dict[str, Any] = {}
    if body.structured_outputs is not None:
        constraint = await structured_constraint(engine, body.structured_outputs, limits.schema)
    elif body.response_format is not None and body.response_format.json_schema is not None:
        json_schema = body.response_format.json_schema.schema_ or {"type": "object"}
        await _checked_schema(engine, json_schema, limits.schema, "response_format")
        constraint = {"json_schema": json_schema}
    elif body.response_format is not None and body.response_format.type == "json_object":
        constraint = {"json_object": True}
    elif parsing is not None and parsing.constraint_schema is not None:  # a required or named tool call
        schema = parsing.constraint_schema
        if isinstance(schema, str):
            schema = _json_object(schema, "tools")
        await _checked_schema(engine, schema, limits.schema, "tools")
        constraint = {"json_schema": schema, "structured_param": "tools"}
    elif parsing is not None and parsing.structural_tag is not None:  # calls in the model's own format
        check_constraint_limits(parsing.structural_tag, limits.schema, "tools")
        constraint = {"structural_tag": parsing.structural_tag, "structured_param": "tools"}
    spec = _spec(body, max_tokens, logprobs=logprobs, prompt_logprobs=None, constraint=constraint)
    if (
        parsing is not None and not parsing.skip_special_tokens
    ):  # the parser reads markers some models mark special
        spec = replace(spec, skip_special_tokens=False)
    return prompt, spec, parsing


async def prepare_completion(
    engine: EngineClient, body: CompletionRequest, limits: InputLimits
) -> tuple[list[PreparedPrompt], SamplingSpec]:
    """Tokenize each prompt of a completion request, check sizes and build the sampling spec.

    With `echo`, every prompt carries its text: token-id prompts are decoded for it.
    """
    check_sequences(len(body.prompts), body.n, engine.max_num_seqs)
    chars = sum(len(prompt) for prompt in body.prompts if isinstance(prompt, str))
    check_prompt_chars(chars, limits.prompt_chars, "prompts")
    prompt_logprobs = body.logprobs if body.echo and body.logprobs is not None else None
    if prompt_logprobs is not None and not engine.supports_prompt_logprobs:
        raise InvalidRequestError(
            "echo with logprobs is not supported while LoRA is enabled on the CPU engine", param="echo"
        )
    prompts = list(await asyncio.gather(*(engine.render_completion(prompt) for prompt in body.prompts)))
    if body.echo:
        prompts = [
            prompt if prompt.text is not None else replace(prompt, text=engine.decode(prompt.token_ids))
            for prompt in prompts
        ]
    max_tokens = body.max_tokens
    for prompt in prompts:
        resolved = resolve_max_tokens(len(prompt.token_ids), body.max_tokens, engine.max_model_len, "prompt")
        max_tokens = resolved if max_tokens is None else min(max_tokens, resolved)
    check_response_size(
        len(prompts),
        body.n,
        max_tokens or 1,
        body.logprobs or 0,
        limits.response_tokens,
        max_tokens_param="max_tokens",
        alternatives_param="logprobs",
    )
    constraint: dict[str, Any] = {}
    if body.structured_outputs is not None:
        constraint = await structured_constraint(engine, body.structured_outputs, limits.schema)
    return prompts, _spec(
        body, max_tokens or 1, logprobs=body.logprobs, prompt_logprobs=prompt_logprobs, constraint=constraint
    )
