"""`POST /v1/chat/completions`: parse the body, word the answer; the request's life is `serving`'s."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from server.answers import ChatCompletionResponse
from server.api.chat_format import ChatFormat
from server.api.disconnect import unless_disconnected
from server.api.errors import documented_errors
from server.api.parsed_chat_format import ParsedChatFormat
from server.api.respond import MakeFormat, Prepare, respond
from server.api.sse import EVENT_SCHEMA
from server.api.state import AnswerOptions, AppState, Serving, get_serving, get_state
from server.engine.types import PreparedPrompt, SamplingSpec
from server.protocol import ChatCompletionRequest
from server.serving.prepare import prepare_chat

if TYPE_CHECKING:
    from server.engine.output_parsing import RequestParsing

router = APIRouter(responses=documented_errors(400, 401, 404, 413, 429, 503))


@router.post(
    "/v1/chat/completions",
    response_model=None,
    responses={
        200: {
            "model": ChatCompletionResponse,
            "content": {"text/event-stream": {"schema": EVENT_SCHEMA}},
        }
    },
)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    serving: Serving = Depends(get_serving),
    state: AppState = Depends(get_state),
) -> Response:
    """Create a chat completion, streamed as server-sent events when `stream` is true."""
    intake = serving.intake
    scope = await intake.open(body.model, body.tier, partial(unless_disconnected, request))

    prepare, wording = chat_plan(serving, body, state.answers)
    return await respond(scope, request, prepare, wording, prefix="chatcmpl", stream=body.stream)


def chat_plan(
    serving: Serving, body: ChatCompletionRequest, answers: AnswerOptions
) -> tuple[Prepare, MakeFormat]:
    """How a chat request is prepared and worded (live, in the background, or as a batch line)."""
    parsing: RequestParsing | None = None

    async def prepare() -> tuple[list[PreparedPrompt], SamplingSpec]:
        nonlocal parsing
        prompt, spec, parsing = await prepare_chat(serving.engine, body, serving.intake.limits)
        return [prompt], spec

    def wording(request_id: str, prompts: list[PreparedPrompt]) -> ChatFormat:
        fingerprint = serving.engine.system_fingerprint
        if parsing is None:  # plain text: the lean per-token path
            return ChatFormat(body, request_id, len(prompts[0].token_ids), answers, fingerprint)
        return ParsedChatFormat(body, request_id, prompts[0].token_ids, answers, fingerprint, parsing)

    return prepare, wording
