"""`POST /v1/chat/completions`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from server.auth import require_api_key
from server.engine.types import GenerationStep, TokenLogprob
from server.errors import ServerError, server_error_body
from server.generation import Books, EngineClient, collect, prepare_chat, run_generation
from server.metrics import Status
from server.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatLogprobs,
    TopLogprob,
    Usage,
)
from server.protocol import (
    TokenLogprob as WireTokenLogprob,
)
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


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    response: Response,
    engine: EngineClient = Depends(get_engine),
    state: AppState = Depends(get_state),
) -> ChatCompletionResponse | Response:
    """Create a chat completion, streamed as server-sent events when `stream` is true."""
    lease = lease_model(engine, state, body.model)
    books = Books(state.accounting, lease.label)
    streaming = False
    response.headers.update(lease.headers)
    try:
        prompt, spec = await prepare_chat(engine, body)
        request_id = new_request_id("chatcmpl")
        if body.stream:
            steps = run_generation(engine, request_id, [prompt], spec, adapter=lease.adapter, books=books)
            # The first step comes before the headers, so a parameter the engine refuses is still a 400.
            _, first = await anext(steps)
            streaming = True  # from here the stream owns the lease and releases it when it ends
            return StreamingResponse(
                _stream(body, request_id, first, steps, lease=lease, books=books),
                media_type="text/event-stream",
                headers=lease.headers,
            )
        result = await until_disconnected(
            request, collect(engine, request_id, [prompt], spec, adapter=lease.adapter, books=books)
        )
        energy = await books.close(Status.ABORTED if isinstance(result, Response) else Status.OK)
    finally:
        if not streaming:
            await books.close(Status.ERROR)
            lease.release()
    if isinstance(result, Response):
        return result
    return ChatCompletionResponse(
        id=request_id,
        model=body.model,
        choices=[
            ChatChoice(
                index=choice.index,
                message=AssistantMessage(content=choice.text),
                logprobs=chat_logprobs(choice.logprobs),
                finish_reason=choice.finish_reason,
            )
            for choice in result.choices
        ],
        usage=make_usage(result.prompt_tokens, result.completion_tokens, energy),
    )


async def _stream(
    body: ChatCompletionRequest,
    request_id: str,
    first: GenerationStep,
    steps: AsyncIterator[tuple[int, GenerationStep]],
    *,
    lease: ModelLease,
    books: Books,
) -> AsyncIterator[bytes]:
    created = int(time.time())

    def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None) -> bytes:
        return sse_event(
            ChatCompletionChunk(
                id=request_id, created=created, model=body.model, choices=choices, usage=usage
            )
        )

    yield chunk(
        [ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content="")) for i in range(body.n)]
    )
    prompt_tokens, completion_tokens = first.prompt_token_count, 0
    try:
        async for _, step in prepend((0, first), steps):
            choices = []
            for delta in step.deltas:
                completion_tokens += delta.token_count
                if delta.text or delta.finish_reason or delta.logprobs:
                    choices.append(
                        ChatChunkChoice(
                            index=delta.index,
                            delta=ChatDelta(content=delta.text),
                            logprobs=chat_logprobs(delta.logprobs),
                            finish_reason=delta.finish_reason,
                        )
                    )
            if choices:
                yield chunk(choices)
        energy = await books.close(Status.OK)
        if body.include_usage:
            yield chunk([], make_usage(prompt_tokens, completion_tokens, energy))
    except ServerError as err:
        await books.close(Status.ERROR)
        yield sse_event(server_error_body(err))
    finally:
        await steps.aclose()
        await books.close(Status.ABORTED)
        lease.release()
    yield DONE
