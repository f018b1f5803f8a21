"""The request lifecycle both generation routes share: admit, generate, stream or collect, then settle.

A request holds its model version (lease) and its energy books from admission until it ends, however it
ends: answered, streamed to the end, refused, errored or abandoned by the client. Both are released once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from server.accounting import EnergyFigures
from server.engine.types import GenerationStep, PreparedPrompt, SamplingSpec
from server.errors import ServerError, server_error_body
from server.generation import Books, EngineClient, GenerationResult, collect, run_generation
from server.metrics import Status
from server.routes.common import ModelLease, lease_model, new_request_id, until_disconnected
from server.sse import DONE, sse_event
from server.state import AppState

Step = tuple[int, GenerationStep]  # (prompt index, step)


@dataclass
class Admission:
    """A request's hold on its model version and its energy books."""

    lease: ModelLease
    books: Books

    async def settle(self, status: Status) -> None:
        """Close the books (if still open) and let the model version drain."""
        await self.books.close(status)
        self.lease.release()


def admit(engine: EngineClient, state: AppState, model: str) -> Admission:
    """Resolve and hold `model` (404 if unknown) and open the request's energy books."""
    lease = lease_model(engine, state, model)
    return Admission(lease, Books(state.accounting, lease.label))


async def serve(
    request: Request,
    engine: EngineClient,
    admission: Admission,
    prepare: Callable[[], Awaitable[tuple[list[PreparedPrompt], SamplingSpec]]],
    *,
    prefix: str,
    stream: bool,
    events: Callable[[str, Step, AsyncIterator[Step], Admission], AsyncIterator[bytes]],
    build: Callable[[str, GenerationResult, EnergyFigures | None], BaseModel],
) -> BaseModel | Response:
    """Run one generation request to a JSON body or an SSE stream.

    Args:
        request: The HTTP request (watched for client disconnects when not streaming).
        engine: The engine.
        admission: The request's model version and energy books; settled here or by the stream.
        prepare: Renders the prompts and builds the sampling spec (may raise 400s).
        prefix: Request-id prefix (`chatcmpl`, `cmpl`).
        stream: Answer with server-sent events.
        events: Formats the stream's events from the first step and the rest.
        build: Formats the non-streamed body.
    """
    handed_to_stream = False
    try:
        prompts, spec = await prepare()
        request_id = new_request_id(prefix)
        kwargs = {"adapter": admission.lease.adapter, "books": admission.books}
        if stream:
            steps = run_generation(engine, request_id, prompts, spec, **kwargs)
            # The first step comes before the headers, so a parameter the engine refuses is still a 400.
            first = await anext(steps)
            handed_to_stream = True
            return StreamingResponse(
                _sse(events(request_id, first, steps, admission), steps, admission),
                media_type="text/event-stream",
                headers=admission.lease.headers,
            )
        result = await until_disconnected(request, collect(engine, request_id, prompts, spec, **kwargs))
        if isinstance(result, Response):
            await admission.books.close(Status.ABORTED)
            return result
        return build(request_id, result, await admission.books.close(Status.OK))
    finally:
        if not handed_to_stream:
            await admission.settle(Status.ERROR)


async def _sse(
    events: AsyncIterator[bytes], steps: AsyncIterator[Step], admission: Admission
) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield event
    except ServerError as err:
        await admission.books.close(Status.ERROR)
        yield sse_event(server_error_body(err))
    finally:
        # Also reached when the client goes away: closing `steps` aborts the engine requests.
        await steps.aclose()
        await admission.settle(Status.ABORTED)
    yield DONE
