"""`POST /v1/completions` (the legacy text-completion API)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from server.auth import require_api_key
from server.engine.types import GenerationStep, TokenLogprob
from server.errors import ServerError, server_error_body
from server.generation import EngineClient, collect, prepare_completion, run_generation
from server.protocol import CompletionChoice, CompletionLogprobs, CompletionRequest, CompletionResponse, Usage
from server.routes.common import check_model, new_request_id, prepend, until_disconnected
from server.sse import DONE, sse_event
from server.state import get_engine

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
    body: CompletionRequest, request: Request, engine: EngineClient = Depends(get_engine)
) -> CompletionResponse | Response:
    """Create completions for one or several prompts, streamed when `stream` is true."""
    check_model(engine, body.model)
    prompts, spec = await prepare_completion(engine, body)
    request_id = new_request_id("cmpl")
    if body.stream:
        steps = run_generation(engine, request_id, prompts, spec, stream=True)
        # The first step comes before the headers, so a parameter the engine refuses is still a 400.
        first = await anext(steps)
        return StreamingResponse(_stream(body, request_id, first, steps), media_type="text/event-stream")
    result = await until_disconnected(request, collect(engine, request_id, prompts, spec))
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
        usage=Usage(
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            total_tokens=result.prompt_tokens + result.completion_tokens,
        ),
    )


async def _stream(
    body: CompletionRequest,
    request_id: str,
    first: tuple[int, GenerationStep],
    steps: AsyncIterator[tuple[int, GenerationStep]],
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
        if body.include_usage:
            total_prompt = sum(prompt_tokens)
            yield chunk(
                [],
                Usage(
                    prompt_tokens=total_prompt,
                    completion_tokens=completion_tokens,
                    total_tokens=total_prompt + completion_tokens,
                ),
            )
    except ServerError as err:
        yield sse_event(server_error_body(err))
    finally:
        await steps.aclose()
    yield DONE
