"""`POST /v1/completions` (the legacy text-completion API)."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel

from server.accounting import EnergyFigures
from server.auth import require_api_key
from server.engine.types import TokenLogprob
from server.generation import EngineClient, GenerationResult, prepare_completion
from server.metrics import Status
from server.protocol import CompletionChoice, CompletionLogprobs, CompletionRequest, CompletionResponse, Usage
from server.routes.common import make_usage, prepend
from server.routes.serving import Admission, Step, admit, serve
from server.sse import sse_event
from server.state import AppState, get_engine, get_state

router = APIRouter(dependencies=[Depends(require_api_key)])


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


@router.post("/v1/completions", response_model=None)
async def create_completion(
    body: CompletionRequest,
    request: Request,
    response: Response,
    engine: EngineClient = Depends(get_engine),
    state: AppState = Depends(get_state),
) -> BaseModel | Response:
    """Create completions for one or several prompts, streamed when `stream` is true."""
    admission = admit(engine, state, body.model)
    response.headers.update(admission.lease.headers)

    def build(request_id: str, result: GenerationResult, energy: EnergyFigures | None) -> CompletionResponse:
        choices = []
        for choice in result.choices:
            prompt_index = choice.index // body.n
            text, logprob_entries = choice.text, choice.logprobs
            if body.echo:
                text = body.prompts[prompt_index] + text
                echoed = result.prompt_logprobs[prompt_index]
                if logprob_entries is not None and echoed is not None:
                    logprob_entries = echoed + logprob_entries
            logprobs = None if logprob_entries is None else completion_logprobs(logprob_entries, 0)
            choices.append(
                CompletionChoice(
                    index=choice.index, text=text, logprobs=logprobs, finish_reason=choice.finish_reason
                )
            )
        return CompletionResponse(
            id=request_id,
            model=body.model,
            choices=choices,
            usage=make_usage(result.prompt_tokens, result.completion_tokens, energy),
        )

    return await serve(
        request,
        engine,
        admission,
        lambda: prepare_completion(engine, body),
        prefix="cmpl",
        stream=body.stream,
        events=functools.partial(_events, body),
        build=build,
    )


async def _events(
    body: CompletionRequest, request_id: str, first: Step, steps: AsyncIterator[Step], admission: Admission
) -> AsyncIterator[bytes]:
    created = int(time.time())
    prompt_tokens = [0] * len(body.prompts)
    completion_tokens = 0
    offsets = [0] * (len(body.prompts) * body.n)
    echoed = [False] * len(offsets)

    def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> bytes:
        return sse_event(
            CompletionResponse(id=request_id, created=created, model=body.model, choices=choices, usage=usage)
        )

    async for prompt_index, step in prepend(first, steps):
        prompt_tokens[prompt_index] = step.prompt_token_count
        choices = []
        for delta in step.deltas:
            completion_tokens += delta.token_count
            index = prompt_index * body.n + delta.index
            text, entries = delta.text, delta.logprobs
            if body.echo and not echoed[index]:
                echoed[index] = True
                text = body.prompts[prompt_index] + text
                if entries is not None and step.prompt_logprobs is not None:
                    entries = step.prompt_logprobs + entries
            logprobs = None
            if entries is not None:
                logprobs = completion_logprobs(entries, offsets[index])
            offsets[index] += len(text)
            if text or delta.finish_reason or logprobs:
                choices.append(
                    CompletionChoice(
                        index=index, text=text, logprobs=logprobs, finish_reason=delta.finish_reason
                    )
                )
        if choices:
            yield chunk(choices)
    energy = await admission.books.close(Status.OK)
    if body.include_usage:
        yield chunk([], make_usage(sum(prompt_tokens), completion_tokens, energy))
