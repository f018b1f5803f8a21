"""How chat completions are worded: chunks and bodies shaped as vLLM's, one choice per chunk."""

from __future__ import annotations

import time

from server.answers import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatDelta,
    ChatLogprobs,
    TopLogprob,
    Usage,
)
from server.answers import TokenLogprob as WireTokenLogprob
from server.api.respond import UNDOCUMENTED_FINISH, GenerationResult, RunningUsage
from server.api.sse import HOLE, EventTemplate, sse_event
from server.api.state import AnswerOptions
from server.engine.types import ChoiceDelta, GenerationStep, TokenLogprob
from server.protocol import ChatCompletionRequest


def chat_logprobs(entries: list[TokenLogprob] | None) -> ChatLogprobs | None:
    """Chat-format logprobs for the given tokens."""
    if entries is None:
        return None
    return ChatLogprobs(
        content=[
            WireTokenLogprob(
                token=entry.token,
                logprob=entry.logprob if entry.logprob is not None else 0.0,
                bytes=list(entry.token.encode()),
                top_logprobs=[
                    TopLogprob(token=token, logprob=logprob, bytes=list(token.encode()))
                    for token, logprob in entry.top
                ],
            )
            for entry in entries
        ]
    )


class ChatFormat:
    """Chat completion chunks and bodies for one request, shaped as vLLM's: one choice per chunk."""

    def __init__(
        self,
        body: ChatCompletionRequest,
        request_id: str,
        prompt_tokens: int,
        answers: AnswerOptions,
        system_fingerprint: str | None,
    ) -> None:
        self._body = body
        self._request_id = request_id
        self._prompt_tokens = prompt_tokens
        self._role = answers.response_role
        self._fingerprint = system_fingerprint
        self._created = int(time.time())
        self._content: dict[int, EventTemplate] = {}
        # Forced usage is vLLM's include_usage and continuous_usage_stats both on, whatever the request says.
        self._include_usage = answers.force_include_usage or body.include_usage
        continuous = answers.force_include_usage or body.continuous_usage
        self._running = RunningUsage(body.n) if continuous else None

    def _chunk(
        self, choices: list[ChatChunkChoice], usage: Usage | None = None, *, last: bool = False
    ) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self._request_id,
            created=self._created,
            model=self._body.model,
            service_tier=self._body.tier.name,
            system_fingerprint=self._fingerprint if last else None,
            choices=choices,
            usage=usage,
        )

    def stream_head(self) -> bytes:
        """The role chunk of each choice; with continuous usage, the prompt's tokens and none generated."""
        usage = None
        if self._running is not None:
            prompt = self._prompt_tokens
            usage = Usage(prompt_tokens=prompt, completion_tokens=0, total_tokens=prompt)
        return b"".join(
            sse_event(
                self._chunk([ChatChunkChoice(index=i, delta=ChatDelta(role=self._role, content=""))], usage)
            )
            for i in range(self._body.n)
        )

    def stream_step(self, prompt_index: int, step: GenerationStep) -> bytes:
        """A chunk per choice that advanced; text-only deltas take the pre-serialised path."""
        deltas = step.deltas
        if len(deltas) == 1:
            return self._choice_event(deltas[0])
        return b"".join(self._choice_event(delta) for delta in deltas)

    def _choice_event(self, delta: ChoiceDelta) -> bytes:
        usage = None
        if self._running is not None:
            usage = self._running.after(delta.index, self._prompt_tokens, delta)
        elif delta.logprobs is None and delta.finish_reason is None:
            if not delta.text:  # a token that ends mid-character: nothing to say until its text is whole
                return b""
            template = self._content.get(delta.index)
            if template is None:
                choice = ChatChunkChoice(index=delta.index, delta=ChatDelta(content=HOLE))
                template = self._content[delta.index] = EventTemplate(self._chunk([choice]))
            return template.fill(delta.text)
        finish = None if delta.finish_reason in UNDOCUMENTED_FINISH else delta.finish_reason
        # With running usage, every token gets its chunk, as in vLLM, so the counts it carries are whole.
        if not (delta.text or finish or delta.logprobs or usage is not None):
            return b""
        choice = ChatChunkChoice(
            index=delta.index,
            delta=ChatDelta(content=delta.text),
            logprobs=chat_logprobs(delta.logprobs),
            finish_reason=finish,
            stop_reason=delta.stop_reason if finish else None,
        )
        return sse_event(self._chunk([choice], usage, last=finish is not None and not self._include_usage))

    def stream_usage(self, usage: Usage) -> bytes:
        """The final usage chunk, if `stream_options.include_usage` (or the server) asked for it."""
        return sse_event(self._chunk([], usage, last=True)) if self._include_usage else b""

    def body(self, result: GenerationResult, usage: Usage) -> ChatCompletionResponse:
        """The non-streamed completion."""
        return ChatCompletionResponse(
            id=self._request_id,
            model=self._body.model,
            service_tier=self._body.tier.name,
            system_fingerprint=self._fingerprint,
            choices=[
                ChatChoice(
                    index=choice.index,
                    message=AssistantMessage(role=self._role, content=choice.text),
                    logprobs=chat_logprobs(choice.logprobs),
                    finish_reason=choice.finish_reason,
                    stop_reason=choice.stop_reason,
                )
                for choice in result.choices
            ],
            usage=usage,
        )
