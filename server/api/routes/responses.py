"""`/v1/responses`: create (answered, streamed, or run in the background), retrieve, delete, cancel.

A response is served as the chat request it amounts to (`server.serving.responses`), through the same
intake, scope, admission, tiers and energy books; `background: true` runs it as a task of its own (a
`flex` one waits in the flex lane like any flex request) and is polled with GET.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from server.api.disconnect import unless_disconnected
from server.api.errors import documented_errors
from server.api.respond import answer_in_full, respond
from server.api.responses_format import ResponsesFormat
from server.api.responses_service import ResponsesService, as_items, owner_of
from server.api.sse import EVENT_SCHEMA
from server.api.state import Serving, get_serving
from server.engine.types import PreparedPrompt, SamplingSpec
from server.errors import EngineUnavailableError
from server.protocol import ChatCompletionRequest
from server.responses_answers import Response as ResponseObject
from server.responses_answers import new_id
from server.responses_wire import ResponsesRequest
from server.serving.prepare import prepare_chat
from server.serving.responses import chat_request

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from server.engine.output_parsing import RequestParsing

router = APIRouter(responses=documented_errors(400, 401, 404, 413, 429, 503))


def _service(serving: Serving) -> ResponsesService:
    if serving.responses is None:
        raise EngineUnavailableError("The response store is not open.")
    return serving.responses


async def _unwatched(work: Awaitable[Any]) -> Any:
    return await work  # a background response has no client to lose


class _Run:
    """One response's generation: its chat request, its parsing once prepared, its format."""

    def __init__(
        self,
        serving: Serving,
        body: ResponsesRequest,
        chat: ChatCompletionRequest,
        response: ResponseObject,
        save: Any,
    ) -> None:
        self.serving, self.body, self.chat, self.response, self.save = serving, body, chat, response, save
        self.parsing: RequestParsing | None = None

    async def prepare(self) -> tuple[list[PreparedPrompt], SamplingSpec]:
        prompt, spec, self.parsing = await prepare_chat(
            self.serving.engine, self.chat, self.serving.intake.limits
        )
        return [prompt], spec

    def wording(self, _request_id: str, prompts: list[PreparedPrompt]) -> ResponsesFormat:
        return ResponsesFormat(self.response, prompts[0].token_ids, self.parsing, self.save)


@router.post(
    "/v1/responses",
    response_model=None,
    responses={200: {"model": ResponseObject, "content": {"text/event-stream": {"schema": EVENT_SCHEMA}}}},
)
async def create_response(
    body: ResponsesRequest, request: Request, serving: Serving = Depends(get_serving)
) -> Response:
    """Create a model response, streamed as typed server-sent events when `stream` is true."""
    service = _service(serving)
    owner = owner_of(request.headers.get("authorization"))
    history: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        history = (await service.stored(owner, body.previous_response_id, "previous_response_id")).history
    chat = chat_request(body, history)
    conversation = history + body.input_items()
    response = ResponseObject(
        id=new_id("resp"),
        status="in_progress",
        model=body.model,
        service_tier=body.tier.name,
        **body.echoed(),
    )

    def save(done: ResponseObject) -> None:
        if body.store is not False:
            service.save(owner, done, conversation + as_items(done))

    run = _Run(serving, body, chat, response, save)
    if body.background:
        queued = response.model_copy(update={"status": "queued"})
        service.save(owner, queued, conversation)
        service.run_in_background(response.id, _background(run, service, owner, conversation))
        return JSONResponse(queued.model_dump(mode="json", exclude_none=False))
    scope = await serving.intake.open(body.model, body.tier, partial(unless_disconnected, request))
    return await respond(scope, request, run.prepare, run.wording, prefix="resp", stream=bool(body.stream))


async def _background(
    run: _Run, service: ResponsesService, owner: str, conversation: list[dict[str, Any]]
) -> None:
    try:
        scope = await run.serving.intake.open(run.body.model, run.body.tier, _unwatched)
        service.save(owner, run.response, conversation)  # admitted: in progress
        await answer_in_full(scope, run.prepare, run.wording, prefix="resp")  # saves the finished response
    except BaseException as err:
        service.ended(owner, run.response, conversation, err)
        if not isinstance(err, Exception):
            raise


@router.get("/v1/responses/{response_id}", response_model=ResponseObject)
async def retrieve_response(
    response_id: str, request: Request, serving: Serving = Depends(get_serving)
) -> JSONResponse:
    """A stored response, as it stands (a background one: queued, in progress, or how it ended)."""
    record = await _service(serving).stored(owner_of(request.headers.get("authorization")), response_id)
    return JSONResponse(record.body)


@router.delete("/v1/responses/{response_id}")
async def delete_response(
    response_id: str, request: Request, serving: Serving = Depends(get_serving)
) -> dict[str, Any]:
    """Delete a stored response (a background one still running is stopped first)."""
    await _service(serving).delete(owner_of(request.headers.get("authorization")), response_id)
    return {"id": response_id, "object": "response", "deleted": True}


@router.post("/v1/responses/{response_id}/cancel", response_model=ResponseObject)
async def cancel_response(
    response_id: str, request: Request, serving: Serving = Depends(get_serving)
) -> JSONResponse:
    """Stop a background response; it is answered as stored once stopped (a finished one unchanged)."""
    body = await _service(serving).cancel(owner_of(request.headers.get("authorization")), response_id)
    return JSONResponse(body)
