"""`POST /v1/completions` (the legacy text-completion API)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from server.auth import require_api_key
from server.engine.types import GenerationStep, TokenLogprob
from server.errors import ServerError, server_error_body
from server.generation import Books, EngineClient, collect, prepare_completion, run_generation
from server.metrics import Status
from server.protocol import CompletionChoice, CompletionLogprobs, CompletionRequest, CompletionResponse, Usage
from server.routes.common import (
    ModelLease,
    lease_model,
    make_usage,
    new_request_id,
    prepend,
    until_disconnected,
)
from server.sse import DONE, sse_event
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
) -> CompletionResponse | Response:
    """Create completions for one or several prompts, streamed when `stream` is true."""
    lease = lease_model(engine, state, body.model)
    books = Books(state.accounting, lease.label)
    streaming = False
    response.headers.update(lease.headers)
    try:
        prompts, spec = await prepare_completion(engine, body)
        request_id = new_request_id("cmpl")
        if body.stream:
            steps = run_generation(engine, request_id, prompts, spec, adapter=lease.adapter, books=books)
            # The first step comes before the headers, so a parameter the engine refuses is still a 400.
            first = await anext(steps)
            streaming = True  # from here the stream owns the lease and releases it when it ends
            return StreamingResponse(
                _stream(body, request_id, first, steps, lease=lease, books=books),
                media_type="text/event-stream",
                headers=lease.headers,
            )
        result = await until_disconnected(
            request, collect(engine, request_id, prompts, spec, adapter=lease.adapter, books=books)
        )
        energy = await books.close(Status.ABORTED if isinstance(result, Response) else Status.OK)
    finally:
        if not streaming:
            await books.close(Status.ERROR)
            lease.release()
    if isinstance(result, Response):
        return result
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


async def _stream(
    body: CompletionRequest,
    request_id: str,
    first: tuple[int, GenerationStep],
    steps: AsyncIterator[tuple[int, GenerationStep]],
    *,
    lease: ModelLease,
    books: Books,
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

    try:
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
        energy = await books.close(Status.OK)
        if body.include_usage:
            yield chunk([], make_usage(sum(prompt_tokens), completion_tokens, energy))
    except ServerError as err:
        await books.close(Status.ERROR)
        yield sse_event(server_error_body(err))
    finally:
        await steps.aclose()
        await books.close(Status.ABORTED)
        lease.release()
    yield DONE
