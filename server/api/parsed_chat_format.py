"""Chat answers whose text is read by the output parsers: reasoning, answer text and tool calls apart.

As vLLM's server words them: `message.reasoning` and `message.tool_calls`, streamed as `reasoning`
and `tool_calls` deltas (a call's first piece names its index, id and function, later pieces add argument
text), `finish_reason` `tool_calls` when the model called a tool of its own choice or under `required`
(a named call finishes with `stop`), and `completion_tokens_details.reasoning_tokens` with a reasoning
parser. Plain chats never come here: they keep the lean per-token path of `ChatFormat`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from server.answers import (
    AssistantMessage,
    CalledFunction,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionResponse,
    ChatDelta,
    CompletionTokensDetails,
    FunctionFragment,
    ToolCall,
    ToolCallChunk,
    Usage,
)
from server.api.chat_format import ChatFormat, chat_logprobs
from server.api.respond import UNDOCUMENTED_FINISH, GenerationResult
from server.api.sse import sse_event
from server.api.state import AnswerOptions
from server.engine.types import ChoiceDelta, ParsedDelta, ToolCallFragment

if TYPE_CHECKING:
    from server.engine.output_parsing import RequestParsing
from server.protocol import ChatCompletionRequest

TOOL_CALLS_FINISH = "tool_calls"


def _chunks(fragments: list[ToolCallFragment]) -> list[ToolCallChunk] | None:
    if not fragments:
        return None
    return [
        ToolCallChunk(
            index=fragment.index,
            id=fragment.id,
            type="function" if fragment.id is not None else None,
            function=FunctionFragment(name=fragment.name, arguments=fragment.arguments or None),
        )
        for fragment in fragments
    ]


def with_reasoning(usage: Usage, reasoning_tokens: int) -> Usage:
    """`usage` with the reasoning tokens counted, and their share of the energy.

    The meter cannot tell a reasoning token's joules from an answer token's within one request: the
    request's joules are split by token count, and the field's name says what it is.
    """
    details = CompletionTokensDetails(reasoning_tokens=reasoning_tokens)
    energy = usage.energy
    if energy is not None and usage.completion_tokens:
        share = reasoning_tokens / usage.completion_tokens
        energy = energy.model_copy(update={"reasoning_joules": energy.joules * share})
    return usage.model_copy(update={"completion_tokens_details": details, "energy": energy})


class ParsedChatFormat(ChatFormat):
    """Chat chunks and bodies through one output reader per choice."""

    def __init__(  # noqa: PLR0913, PLR0917 - ChatFormat's arguments and the request's parsing
        self,
        body: ChatCompletionRequest,
        request_id: str,
        prompt_token_ids: Sequence[int],
        answers: AnswerOptions,
        system_fingerprint: str | None,
        parsing: RequestParsing,
    ) -> None:
        super().__init__(body, request_id, len(prompt_token_ids), answers, system_fingerprint)
        self._readers = [parsing.reader(prompt_token_ids) for _ in range(body.n)]
        self._token_ids: list[list[int]] = [[] for _ in range(body.n)]
        self._named = body.forces_tool_call and body.tool_choice != "required"
        self._reasoning = parsing.counts_reasoning

    def _finish(self, index: int, finish_reason: str | None) -> str | None:
        if finish_reason is None or finish_reason in UNDOCUMENTED_FINISH:
            return None
        if finish_reason == "stop" and self._readers[index].called_tools and not self._named:
            return TOOL_CALLS_FINISH
        return finish_reason

    def _choice_event(self, delta: ChoiceDelta) -> bytes:
        index = delta.index
        self._token_ids[index].extend(delta.token_ids)
        usage = None
        if self._running is not None:
            usage = self._running.after(index, self._prompt_tokens, delta)
        finished = delta.finish_reason is not None
        parsed = self._readers[index].feed(delta.text, delta.token_ids, finished=finished) or ParsedDelta()
        finish = self._finish(index, delta.finish_reason)
        said = parsed.content or parsed.reasoning or parsed.tool_calls
        if not (said or finish or delta.logprobs or usage is not None):
            return b""
        choice = ChatChunkChoice(
            index=index,
            delta=ChatDelta(
                content=parsed.content if said else "",
                reasoning=parsed.reasoning,
                tool_calls=_chunks(parsed.tool_calls),
            ),
            logprobs=chat_logprobs(delta.logprobs),
            finish_reason=finish,
            stop_reason=delta.stop_reason if finish else None,
        )
        return sse_event(self._chunk([choice], usage, last=finish is not None and not self._include_usage))

    def _with_reasoning(self, usage: Usage, reasoning_tokens: int) -> Usage:
        return with_reasoning(usage, reasoning_tokens) if self._reasoning else usage

    def stream_usage(self, usage: Usage) -> bytes:
        """The final usage chunk, with the reasoning tokens of every choice."""
        tokens = sum(
            reader.reasoning_tokens(ids) for reader, ids in zip(self._readers, self._token_ids, strict=True)
        )
        return super().stream_usage(self._with_reasoning(usage, tokens))

    def body(self, result: GenerationResult, usage: Usage) -> ChatCompletionResponse:
        """The non-streamed completion, each choice split by its reader."""
        choices = []
        reasoning_tokens = 0
        for choice in result.choices:
            parsed = self._readers[choice.index].parse(choice.text, choice.token_ids)
            reasoning_tokens += parsed.reasoning_tokens
            calls = [
                ToolCall(id=c.id, function=CalledFunction(name=c.name, arguments=c.arguments))
                for c in parsed.tool_calls
            ]
            choices.append(
                ChatChoice(
                    index=choice.index,
                    message=AssistantMessage(
                        role=self._role,
                        content=parsed.content if parsed.content or not calls else None,
                        tool_calls=calls,
                        reasoning=parsed.reasoning,
                    ),
                    logprobs=chat_logprobs(choice.logprobs),
                    finish_reason=self._finish(choice.index, choice.finish_reason) or choice.finish_reason,
                    stop_reason=choice.stop_reason,
                )
            )
        return ChatCompletionResponse(
            id=self._request_id,
            model=self._body.model,
            service_tier=self._body.tier.name,
            system_fingerprint=self._fingerprint,
            choices=choices,
            usage=self._with_reasoning(usage, reasoning_tokens),
        )
