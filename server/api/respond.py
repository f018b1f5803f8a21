"""The generation flow both OpenAI routes share: prepare, generate, then stream events or collect a body.

Routes parse and format; this module runs the request inside its `RequestScope` and hands the scope to
the response stream when it streams. Whoever holds the scope last closes it (see `request_scope`).

A stream keeps taking the engine's output while its client is not reading (the connection's write
buffer is full), holding the events back until the client catches up, so the engine's work, and with
it the admission slot, ends when the engine is done rather than when the client has read everything.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from server.answers import EnergyUsage, PromptTokensDetails, Usage
from server.api.connection import BODY_SEND_EXTENSION, FLOW_EXTENSION
from server.api.disconnect import unless_disconnected
from server.api.json_body import serialize
from server.api.sse import DONE, sse_event
from server.engine.types import ChoiceDelta, GenerationStep, PreparedPrompt, SamplingSpec, TokenLogprob
from server.errors import EngineUnavailableError, InvalidRequestError, ServerError, server_error_body
from server.observability.metrics import Status
from server.serving.scope import EnergyFigures, RequestScope

logger = logging.getLogger(__name__)

Step = tuple[int, GenerationStep]  # (prompt index, step)
ABORTED_BY_ENGINE = "abort"  # vLLM's finish reason for a request aborted under it (shutdown)
FAILED_IN_ENGINE = "error"  # vLLM's finish reason for a request the engine gave up on
UNDOCUMENTED_FINISH = frozenset({ABORTED_BY_ENGINE, FAILED_IN_ENGINE})  # never shown to clients as such
SHUTTING_DOWN = "The server is shutting down; the request was stopped before it finished."


@dataclass
class ChoiceResult:
    """Everything one choice produced, accumulated over the steps."""

    index: int
    text: str = ""
    token_count: int = 0
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    token_ids: list[int] = field(default_factory=list)  # for the output parsers


@dataclass
class GenerationResult:
    """A finished, non-streamed generation."""

    choices: list[ChoiceResult]
    prompt_logprobs: list[list[TokenLogprob] | None] = field(default_factory=list)


class RunningUsage:
    """Usage so far, per choice, for the chunks of a stream that asked for `continuous_usage_stats`.

    As vLLM reports it: the choice's prompt tokens and what that choice generated up to this chunk.
    """

    def __init__(self, choice_count: int) -> None:
        self._generated = [0] * choice_count

    def after(self, choice_index: int, prompt_tokens: int, delta: ChoiceDelta) -> Usage:
        """The usage after `delta`; call it for every delta, chunk or not, so the count stays whole."""
        self._generated[choice_index] += delta.token_count
        generated = self._generated[choice_index]
        return Usage(
            prompt_tokens=prompt_tokens, completion_tokens=generated, total_tokens=prompt_tokens + generated
        )


class ResponseFormat(Protocol):
    """How one endpoint words its answer, streamed or not."""

    def stream_head(self) -> bytes:
        """Events sent before the first token (may be empty)."""
        ...

    def stream_step(self, prompt_index: int, step: GenerationStep) -> bytes:
        """The events for one engine step (may be empty)."""
        ...

    def stream_usage(self, usage: Usage) -> bytes:
        """The usage event, when the client asked for one (else empty)."""
        ...

    def body(self, result: GenerationResult, usage: Usage) -> BaseModel:
        """The non-streamed answer."""
        ...


class ScopedStreamingResponse(StreamingResponse):
    """A streamed answer that closes its request scope however the stream ends, even if never started."""

    def __init__(self, content: AsyncIterator[bytes], scope: RequestScope, headers: dict[str, str]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self._request_scope = scope
        self._flow: Any = None
        self._body_send: Send | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream, then close the request scope (a no-op when the stream already closed it)."""
        extensions = scope.get("extensions", {})
        self._flow, self._body_send = extensions.get(FLOW_EXTENSION), extensions.get(BODY_SEND_EXTENSION)
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._request_scope.close(Status.ABORTED)
            self._request_scope.delivered()

    async def stream_response(self, send: Send) -> None:
        """Send each event; while the client is not reading, keep taking events and send them together."""
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        flow, held = self._flow, []
        send = self._body_send or send  # past the middlewares' wrappers: a chunk per token adds up
        async for chunk in self.body_iterator:
            # A send while the connection's buffer is full waits for the client; the engine would wait too.
            if flow is not None and flow.write_paused:
                held.append(chunk)
                continue
            body = chunk
            if held:
                held.append(chunk)
                body = b"".join(held)
                held.clear()
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"".join(held), "more_body": False})


class ScopedResponse(Response):
    """A whole answer, whose scope counts it as awaiting the client until it is handed to the connection."""

    def __init__(self, content: bytes, scope: RequestScope, headers: dict[str, str]) -> None:
        super().__init__(content, media_type="application/json", headers=headers)
        self._request_scope = scope

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the body, then stop counting the request as awaiting its client."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._request_scope.delivered()


Prepare = Callable[[], Awaitable[tuple[list[PreparedPrompt], SamplingSpec]]]
MakeFormat = Callable[[str, list[PreparedPrompt]], ResponseFormat]


async def answer_in_full(
    scope: RequestScope, prepare: Prepare, make_format: MakeFormat, *, prefix: str
) -> BaseModel:
    """Run one request with no client waiting on a connection (a background response, a batch line).

    Raises:
        ServerError: As the live path answers it (400s, 404, 503), for the caller to record.
    """
    async with scope:
        prompts, spec = await prepare()
        wording = make_format(scope.new_request_id(prefix), prompts)
        result = await collect(scope.generate(prompts, spec), len(prompts) * spec.n, spec.n)
        raise_for_finish({choice.finish_reason for choice in result.choices}, spec)
        body = wording.body(result, usage_of(scope, await scope.finish()))
        scope.delivered()  # no connection carries it: the answer awaits no client
        return body


async def respond(
    scope: RequestScope,
    request: Request,
    prepare: Prepare,
    make_format: MakeFormat,
    *,
    prefix: str,
    stream: bool,
) -> Response:
    """Run one generation request to a JSON body or an SSE stream, inside its open scope.

    Args:
        scope: The request's scope, already open (model held, admitted).
        request: The HTTP request (watched for a client disconnect while the body is collected).
        prepare: Renders the prompts and builds the sampling spec (may raise 400s).
        make_format: Builds the endpoint's wording for a request id and its prepared prompts.
        prefix: Request-id prefix (`chatcmpl`, `cmpl`).
        stream: Answer with server-sent events.
    """
    async with scope:
        # A client that leaves while its schema compiles (or its prompt renders) stops that work.
        prompts, spec = await unless_disconnected(request, prepare())
        wording = make_format(scope.new_request_id(prefix), prompts)
        steps = scope.generate(prompts, spec)
        if stream:
            # The first step comes before the headers, so a parameter the engine refuses is still a 400.
            first = await anext(steps)
            scope.hand_off()
            return ScopedStreamingResponse(_events(scope, wording, first, steps, spec), scope, scope.headers)
        result = await unless_disconnected(request, collect(steps, len(prompts) * spec.n, spec.n))
        raise_for_finish({choice.finish_reason for choice in result.choices}, spec)
        body = wording.body(result, usage_of(scope, await scope.finish()))
        return ScopedResponse(await serialize(body, _size_estimate(result)), scope, scope.headers)


def _size_estimate(result: GenerationResult) -> int:
    """Roughly the answer's JSON bytes: its text, and some 40 bytes per logprob entry."""
    entries = sum(len(p) for p in result.prompt_logprobs if p is not None)
    size = 0
    for choice in result.choices:
        size += len(choice.text)
        for entry in choice.logprobs or ():
            entries += 1 + len(entry.top)
    return size + 40 * entries


async def collect(steps: AsyncIterator[Step], choice_count: int, n: int) -> GenerationResult:
    """Gather a generation's steps into its choices (index = prompt index × n + choice)."""
    choices = [ChoiceResult(index=i) for i in range(choice_count)]
    prompt_logprobs: list[list[TokenLogprob] | None] = [None] * (choice_count // n)
    async for prompt_index, step in steps:
        if step.prompt_logprobs is not None:
            prompt_logprobs[prompt_index] = step.prompt_logprobs
        for delta in step.deltas:
            choice = choices[prompt_index * n + delta.index]
            choice.text += delta.text
            choice.token_count += delta.token_count
            choice.token_ids.extend(delta.token_ids)
            if delta.logprobs is not None:
                choice.logprobs = (choice.logprobs or []) + delta.logprobs
            if delta.finish_reason is not None:
                choice.finish_reason, choice.stop_reason = delta.finish_reason, delta.stop_reason
    return GenerationResult(choices, prompt_logprobs)


def usage_of(scope: RequestScope, energy: EnergyFigures | None) -> Usage:
    """OpenAI's `usage` for the scope's engine requests, with `energy` when the server meters it."""
    prompt_tokens = sum(sub.prompt_tokens for sub in scope.engine_requests)
    completion_tokens = sum(sub.completion_tokens for sub in scope.engine_requests)
    details = None
    if scope.prompt_tokens_details:
        details = PromptTokensDetails(cached_tokens=sum(sub.cached_tokens for sub in scope.engine_requests))
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details=details,
        service_tier=scope.tier.name,
        energy=None if energy is None else EnergyUsage(**vars(energy)),
    )


def raise_for_finish(reasons: set[str | None], spec: SamplingSpec) -> None:
    """Turn vLLM's finish reasons outside OpenAI's set into errors.

    Raises:
        EngineUnavailableError: The request was aborted under it (shutdown, engine death): 503.
        InvalidRequestError: The structured-output grammar admits no output (a schema nothing can match).
        ServerError: The engine gave up on the request for another reason.
    """
    if ABORTED_BY_ENGINE in reasons:
        raise EngineUnavailableError(SHUTTING_DOWN)
    if FAILED_IN_ENGINE in reasons:
        if spec.constrained:
            raise InvalidRequestError(
                f"The {spec.structured_param} constraint admits no output: the structured-output grammar "
                "rejected every token (for instance, a schema whose $ref points back to itself).",
                param=spec.structured_param,
            )
        raise ServerError("The engine failed to complete the request.")


def _finish_reasons(step: GenerationStep) -> set[str | None]:
    return {delta.finish_reason for delta in step.deltas} if step.finished else set()


async def _events(
    scope: RequestScope,
    wording: ResponseFormat,
    first: Step,
    steps: AsyncIterator[Step],
    spec: SamplingSpec,
) -> AsyncIterator[bytes]:
    try:
        head = wording.stream_head()
        if head:
            yield head
        chunk = wording.stream_step(*first)
        if chunk:
            yield chunk
        reasons = _finish_reasons(first[1])
        async for prompt_index, step in steps:
            chunk = wording.stream_step(prompt_index, step)
            if chunk:
                yield chunk
            if step.finished:
                reasons |= _finish_reasons(step)
        raise_for_finish(reasons, spec)
        usage = wording.stream_usage(usage_of(scope, await scope.finish()))
        if usage:
            yield usage
    except ServerError as err:
        scope.close(Status.ERROR)
        yield sse_event(server_error_body(err))
    except Exception:
        # Headers are gone, so the status cannot change: end the stream with an error event instead.
        logger.exception("stream %s failed", scope.request_id)
        scope.close(Status.ERROR)
        yield sse_event(server_error_body(ServerError("Internal server error")))
    finally:
        # Reached with the client gone too (the stream's task is cancelled): close without awaiting.
        scope.close(Status.ABORTED)
    yield DONE
