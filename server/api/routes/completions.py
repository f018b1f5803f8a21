"""`POST /v1/completions` (the legacy text-completion API): parse the body, word the answer."""

from __future__ import annotations

import time
from functools import partial

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from server.answers import CompletionChoice, CompletionLogprobs, CompletionResponse, Usage
from server.api.disconnect import unless_disconnected
from server.api.errors import documented_errors
from server.api.respond import (
    UNDOCUMENTED_FINISH,
    GenerationResult,
    MakeFormat,
    Prepare,
    RunningUsage,
    respond,
)
from server.api.sse import EVENT_SCHEMA, HOLE, EventTemplate, sse_event
from server.api.state import AnswerOptions, AppState, Serving, get_serving, get_state
from server.engine.types import ChoiceDelta, GenerationStep, PreparedPrompt, TokenLogprob
from server.protocol import CompletionRequest
from server.serving.prepare import prepare_completion

router = APIRouter(responses=documented_errors(400, 401, 404, 413, 429, 503))


def completion_logprobs(entries: list[TokenLogprob], text_offset: int) -> CompletionLogprobs:
    """Legacy-format logprobs, with character offsets counted from `text_offset`."""
    result = CompletionLogprobs()
    for entry in entries:
        result.tokens.append(entry.token)
        result.token_logprobs.append(entry.logprob)
        result.top_logprobs.append(dict(entry.top) if entry.logprob is not None else None)
        result.text_offset.append(text_offset)
        text_offset += len(entry.token)
    return result


class CompletionFormat:
    """Completion chunks and bodies for one request, shaped as vLLM's: one choice per chunk.

    A choice's index is its prompt's index × n + its index among the prompt's n.
    """

    def __init__(
        self,
        body: CompletionRequest,
        request_id: str,
        prompts: list[PreparedPrompt],
        *,
        force_usage: bool = False,
        system_fingerprint: str | None = None,
    ) -> None:
        self._body = body
        self._request_id = request_id
        self._fingerprint = system_fingerprint
        self._created = int(time.time())
        self._echo_texts = [prompt.text or "" for prompt in prompts]
        choices = len(prompts) * body.n
        self._offsets = [0] * choices
        self._echoed = [not body.echo] * choices
        self._content: dict[int, EventTemplate] = {}
        # Forced usage is vLLM's include_usage and continuous_usage_stats both on, whatever the request says.
        self._include_usage = force_usage or body.include_usage
        continuous = force_usage or body.continuous_usage
        self._running = RunningUsage(choices) if continuous else None

    def _chunk(
        self, choices: list[CompletionChoice], usage: Usage | None = None, *, last: bool = False
    ) -> CompletionResponse:
        return CompletionResponse(
            id=self._request_id,
            created=self._created,
            model=self._body.model,
            service_tier=self._body.tier.name,
            system_fingerprint=self._fingerprint if last else None,
            choices=choices,
            usage=usage,
        )

    def stream_head(self) -> bytes:
        """Completions start with the first token."""
        return b""

    def stream_step(self, prompt_index: int, step: GenerationStep) -> bytes:
        """A chunk per choice that advanced; text-only deltas after any echo take the pre-serialised path."""
        deltas = step.deltas
        if len(deltas) == 1:
            return self._choice_event(prompt_index, step, deltas[0])
        return b"".join(self._choice_event(prompt_index, step, delta) for delta in deltas)

    def _choice_event(self, prompt_index: int, step: GenerationStep, delta: ChoiceDelta) -> bytes:
        index = prompt_index * self._body.n + delta.index
        usage = None
        if self._running is not None:
            usage = self._running.after(index, step.prompt_token_count, delta)
        elif delta.logprobs is None and delta.finish_reason is None and self._echoed[index]:
            if not delta.text:  # a token that ends mid-character: nothing to say until its text is whole
                return b""
            template = self._content.get(index)
            if template is None:
                choice = CompletionChoice(index=index, text=HOLE, finish_reason=None)
                template = self._content[index] = EventTemplate(self._chunk([choice]))
            return template.fill(delta.text)
        text, entries = delta.text, delta.logprobs
        if not self._echoed[index]:
            self._echoed[index] = True
            text = self._echo_texts[prompt_index] + text
            if entries is not None and step.prompt_logprobs is not None:
                entries = step.prompt_logprobs + entries
        logprobs = None if entries is None else completion_logprobs(entries, self._offsets[index])
        self._offsets[index] += len(text)
        finish = None if delta.finish_reason in UNDOCUMENTED_FINISH else delta.finish_reason
        # With running usage, every token gets its chunk, as in vLLM, so the counts it carries are whole.
        if not (text or finish or logprobs or usage is not None):
            return b""
        choice = CompletionChoice(
            index=index,
            text=text,
            logprobs=logprobs,
            finish_reason=finish,
            stop_reason=delta.stop_reason if finish else None,
        )
        return sse_event(self._chunk([choice], usage, last=finish is not None and not self._include_usage))

    def stream_usage(self, usage: Usage) -> bytes:
        """The final usage chunk, if `stream_options.include_usage` (or the server) asked for it."""
        return sse_event(self._chunk([], usage, last=True)) if self._include_usage else b""

    def body(self, result: GenerationResult, usage: Usage) -> CompletionResponse:
        """The non-streamed completion."""
        choices = []
        for choice in result.choices:
            prompt_index = choice.index // self._body.n
            text, logprob_entries = choice.text, choice.logprobs
            if self._body.echo:
                text = self._echo_texts[prompt_index] + text
                echoed = result.prompt_logprobs[prompt_index]
                if logprob_entries is not None and echoed is not None:
                    logprob_entries = echoed + logprob_entries
            logprobs = None if logprob_entries is None else completion_logprobs(logprob_entries, 0)
            choices.append(
                CompletionChoice(
                    index=choice.index,
                    text=text,
                    logprobs=logprobs,
                    finish_reason=choice.finish_reason,
                    stop_reason=choice.stop_reason,
                )
            )
        return CompletionResponse(
            id=self._request_id,
            model=self._body.model,
            service_tier=self._body.tier.name,
            system_fingerprint=self._fingerprint,
            choices=choices,
            usage=usage,
        )


@router.post(
    "/v1/completions",
    response_model=None,
    responses={
        200: {"model": CompletionResponse, "content": {"text/event-stream": {"schema": EVENT_SCHEMA}}}
    },
)
async def create_completion(
    body: CompletionRequest,
    request: Request,
    serving: Serving = Depends(get_serving),
    state: AppState = Depends(get_state),
) -> Response:
    """Create completions for one or several prompts, streamed when `stream` is true."""
    intake = serving.intake
    scope = await intake.open(body.model, body.tier, partial(unless_disconnected, request))
    prepare, wording = completion_plan(serving, body, state.answers)
    return await respond(scope, request, prepare, wording, prefix="cmpl", stream=body.stream)


def completion_plan(
    serving: Serving, body: CompletionRequest, answers: AnswerOptions
) -> tuple[Prepare, MakeFormat]:
    """How a completion request is prepared and worded (live or as a batch line)."""

    def wording(request_id: str, prompts: list[PreparedPrompt]) -> CompletionFormat:
        return CompletionFormat(
            body,
            request_id,
            prompts,
            force_usage=answers.force_include_usage,
            system_fingerprint=serving.engine.system_fingerprint,
        )

    return lambda: prepare_completion(serving.engine, body, serving.intake.limits), wording
