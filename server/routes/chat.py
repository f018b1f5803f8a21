"""`POST /v1/chat/completions`."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel

from server.accounting import EnergyFigures
from server.auth import require_api_key
from server.engine.types import PreparedPrompt, SamplingSpec, TokenLogprob
from server.generation import EngineClient, GenerationResult, prepare_chat
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
from server.protocol import TokenLogprob as WireTokenLogprob
from server.routes.common import make_usage, prepend
from server.routes.serving import Admission, Step, admit, serve
from server.sse import sse_event
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
) -> BaseModel | Response:
    """Create a chat completion, streamed as server-sent events when `stream` is true."""
    admission = admit(engine, state, body.model)
    response.headers.update(admission.lease.headers)

    async def prepare() -> tuple[list[PreparedPrompt], SamplingSpec]:
        prompt, spec = await prepare_chat(engine, body)
        return [prompt], spec

    def build(
        request_id: str, result: GenerationResult, energy: EnergyFigures | None
    ) -> ChatCompletionResponse:
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

    return await serve(
        request,
        engine,
        admission,
        prepare,
        prefix="chatcmpl",
        stream=body.stream,
        events=functools.partial(_events, body),
        build=build,
    )


async def _events(
    body: ChatCompletionRequest,
    request_id: str,
    first: Step,
    steps: AsyncIterator[Step],
    admission: Admission,
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
    prompt_tokens, completion_tokens = first[1].prompt_token_count, 0
    async for _, step in prepend(first, steps):
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
    energy = await admission.books.close(Status.OK)
    if body.include_usage:
        yield chunk([], make_usage(prompt_tokens, completion_tokens, energy))
