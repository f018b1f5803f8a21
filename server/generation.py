"""Turn validated OpenAI requests into engine calls; own cancellation, abort and per-choice accumulation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from adapters.types import AdapterRef
from server.accounting import Accounting, EnergyFigures, RequestTracker
from server.engine.types import GenerationStep, PreparedPrompt, SamplingSpec, TokenLogprob
from server.errors import ContextLengthError, InvalidRequestError
from server.metrics import Status
from server.protocol import ChatCompletionRequest, CompletionRequest, SamplingFields


class EngineClient(Protocol):
    """What request handling needs from the engine."""

    served_model_name: str
    max_model_len: int
    model_path: str
    supports_prompt_logprobs: bool

    async def render_completion(self, text: str, max_tokens: int | None) -> PreparedPrompt:
        """Tokenize a completion prompt."""
        ...

    async def render_chat(self, messages: Sequence[dict[str, str]], max_tokens: int | None) -> PreparedPrompt:
        """Apply the chat template and tokenize."""
        ...

    def generate(
        self,
        prompt: PreparedPrompt,
        spec: SamplingSpec,
        request_id: str,
        *,
        adapter: AdapterRef | None = None,
    ) -> AsyncIterator[GenerationStep]:
        """Stream the steps of one generation."""
        ...

    async def abort(self, request_id: str) -> None:
        """Stop a request and free its KV blocks."""
        ...

    async def check_health(self) -> None:
        """Raise unless the engine can serve."""
        ...


@dataclass
class ChoiceResult:
    """Everything one choice produced, accumulated over the steps."""

    index: int
    text: str = ""
    token_count: int = 0
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None


@dataclass
class GenerationResult:
    """A finished, non-streamed generation."""

    choices: list[ChoiceResult]
    prompt_tokens: int
    prompt_logprobs: list[list[TokenLogprob] | None] = field(default_factory=list)

    @property
    def completion_tokens(self) -> int:
        """Output tokens over all choices."""
        return sum(choice.token_count for choice in self.choices)


@dataclass
class Books:
    """The accounting of one HTTP request: one tracker per engine request it makes."""

    accounting: Accounting
    adapter: str
    trackers: list[RequestTracker] = field(default_factory=list)
    closed: bool = False

    def begin(self, request_id: str) -> RequestTracker:
        """Open the books of one engine request."""
        tracker = self.accounting.begin(request_id, self.adapter)
        self.trackers.append(tracker)
        return tracker

    async def close(self, status: Status) -> EnergyFigures | None:
        """Close every tracker once; later calls return None."""
        if self.closed:
            return None
        self.closed = True
        return await self.accounting.end(self.trackers, status)


def resolve_max_tokens(prompt_tokens: int, requested: int | None, max_model_len: int, what: str) -> int:
    """Check the prompt plus the requested output fit the context; default to what is left.

    Raises:
        ContextLengthError: They do not fit.
    """
    if requested is None:
        requested = max_model_len - prompt_tokens
        if requested >= 1:
            return requested
        requested = 1
    if prompt_tokens + requested > max_model_len:
        raise ContextLengthError(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{prompt_tokens + requested} tokens ({prompt_tokens} in the {what}, {requested} in the "
            f"completion). Please reduce the length of the {what} or completion.",
            param="messages" if what == "messages" else "prompt",
        )
    return requested


def _spec(
    body: SamplingFields,
    max_tokens: int,
    *,
    logprobs: int | None,
    prompt_logprobs: int | None,
    json_schema: dict | None = None,
    json_object: bool = False,
) -> SamplingSpec:
    return SamplingSpec(
        max_tokens=max_tokens,
        n=body.n,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        min_p=body.min_p,
        seed=body.seed,
        stop=body.stop_list,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        repetition_penalty=body.repetition_penalty,
        min_tokens=body.min_tokens,
        ignore_eos=body.ignore_eos,
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        json_schema=json_schema,
        json_object=json_object,
    )


async def prepare_chat(
    engine: EngineClient, body: ChatCompletionRequest
) -> tuple[PreparedPrompt, SamplingSpec]:
    """Template and tokenize a chat request, check its length and build its sampling spec."""
    messages = [{"role": message.role, "content": message.text} for message in body.messages]
    prompt = await engine.render_chat(messages, body.max_output_tokens)
    max_tokens = resolve_max_tokens(
        len(prompt.token_ids), body.max_output_tokens, engine.max_model_len, "messages"
    )
    json_schema, json_object = None, False
    if body.response_format is not None and body.response_format.json_schema is not None:
        json_schema = body.response_format.json_schema.schema_ or {"type": "object"}
    elif body.response_format is not None:
        json_object = body.response_format.type == "json_object"
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    return prompt, _spec(
        body,
        max_tokens,
        logprobs=logprobs,
        prompt_logprobs=None,
        json_schema=json_schema,
        json_object=json_object,
    )


async def prepare_completion(
    engine: EngineClient, body: CompletionRequest
) -> tuple[list[PreparedPrompt], SamplingSpec]:
    """Tokenize each prompt of a completion request, check lengths and build the sampling spec."""
    prompt_logprobs = body.logprobs if body.echo and body.logprobs is not None else None
    if prompt_logprobs is not None and not engine.supports_prompt_logprobs:
        raise InvalidRequestError(
            "echo with logprobs is not supported while LoRA is enabled on the CPU engine", param="echo"
        )
    prompts = list(
        await asyncio.gather(*(engine.render_completion(text, body.max_tokens) for text in body.prompts))
    )
    max_tokens = body.max_tokens
    for prompt in prompts:
        resolved = resolve_max_tokens(len(prompt.token_ids), body.max_tokens, engine.max_model_len, "prompt")
        max_tokens = resolved if max_tokens is None else min(max_tokens, resolved)
    return prompts, _spec(body, max_tokens or 1, logprobs=body.logprobs, prompt_logprobs=prompt_logprobs)


async def run_generation(
    engine: EngineClient,
    request_id: str,
    prompts: Sequence[PreparedPrompt],
    spec: SamplingSpec,
    *,
    adapter: AdapterRef | None = None,
    books: Books | None = None,
) -> AsyncIterator[tuple[int, GenerationStep]]:
    """Generate for every prompt at once, yielding `(prompt index, step)` as steps arrive.

    Closing or cancelling the iterator aborts every unfinished request in the engine, so a client that
    goes away frees its KV blocks at once.
    """
    if len(prompts) == 1:
        async for step in _generate_one(engine, prompts[0], spec, request_id, adapter=adapter, books=books):
            yield 0, step
        return
    queue: asyncio.Queue[tuple[int, GenerationStep | None, Exception | None]] = asyncio.Queue()

    async def pump(index: int, prompt: PreparedPrompt) -> None:
        try:
            async for step in _generate_one(
                engine, prompt, spec, f"{request_id}-{index}", adapter=adapter, books=books
            ):
                queue.put_nowait((index, step, None))
        except Exception as err:  # noqa: BLE001 - handed to the consumer, which re-raises it
            queue.put_nowait((index, None, err))
            return
        queue.put_nowait((index, None, None))

    tasks = [asyncio.create_task(pump(index, prompt)) for index, prompt in enumerate(prompts)]
    try:
        running = len(tasks)
        while running:
            index, step, error = await queue.get()
            if error is not None:
                raise error
            if step is None:
                running -= 1
            else:
                yield index, step
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _generate_one(
    engine: EngineClient,
    prompt: PreparedPrompt,
    spec: SamplingSpec,
    request_id: str,
    *,
    adapter: AdapterRef | None,
    books: Books | None,
) -> AsyncIterator[GenerationStep]:
    finished = False
    tracker = books.begin(request_id) if books is not None else None
    try:
        async for step in engine.generate(prompt, spec, request_id, adapter=adapter):
            finished = step.finished
            if tracker is not None:
                books.accounting.step(tracker, step)
            yield step
    finally:
        if not finished:
            # Disconnect, cancellation or error: free the request in the engine, then let it propagate.
            with contextlib.suppress(Exception):
                await asyncio.shield(engine.abort(request_id))


async def collect(
    engine: EngineClient,
    request_id: str,
    prompts: Sequence[PreparedPrompt],
    spec: SamplingSpec,
    *,
    adapter: AdapterRef | None = None,
    books: Books | None = None,
) -> GenerationResult:
    """Run a non-streamed generation to the end and gather its choices."""
    choices = [ChoiceResult(index=i) for i in range(len(prompts) * spec.n)]
    prompt_tokens = [0] * len(prompts)
    prompt_logprobs: list[list[TokenLogprob] | None] = [None] * len(prompts)
    async for prompt_index, step in run_generation(
        engine, request_id, prompts, spec, adapter=adapter, books=books
    ):
        prompt_tokens[prompt_index] = step.prompt_token_count
        if step.prompt_logprobs is not None:
            prompt_logprobs[prompt_index] = step.prompt_logprobs
        for delta in step.deltas:
            choice = choices[prompt_index * spec.n + delta.index]
            choice.text += delta.text
            choice.token_count += delta.token_count
            if delta.logprobs is not None:
                choice.logprobs = (choice.logprobs or []) + delta.logprobs
            choice.finish_reason = delta.finish_reason or choice.finish_reason
    return GenerationResult(choices, sum(prompt_tokens), prompt_logprobs)
