"""One streamed OpenAI request over an injected `aiohttp.ClientSession`, timed at each network read.

Works against any OpenAI-compatible server. The first token is the first chunk with non-empty content,
reasoning or tool calls (a role-only chunk is not a token); the end is the last such chunk, not the
trailing usage chunk or `[DONE]`. Token counts come from the server's `usage` (the request always asks
for it); without it, from the served model's tokenizer if one was given, else from the number of token
chunks, and each record says which. The `service_tier` a chunk names (OpenAI says there which tier served
the request) is kept as the server's answer to the tier asked for.

aiohttp rather than httpx: at 300 streamed requests/s against the bundled stub on two cores, an httpx
client fell to 94 answered requests/s with a 2 s TTFT (its connection pool and pure-Python HTTP parser
used the whole core), while aiohttp kept the schedule with under 0.2 cores.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from loadtest.sse import SseParser
from loadtest.workload import RequestSpec

ERROR_DETAIL_CHARS = 300


@dataclass
class Outcome:
    """What the client saw of one request; times are `time.perf_counter()` values."""

    sent_at: float
    first_token_at: float | None = None
    end_at: float | None = None
    itl_s: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    token_source: str | None = None
    energy_joules: float | None = None
    energy_source: str | None = None
    response_service_tier: str | None = None  # the `service_tier` the server's chunks named
    status_code: int | None = None
    error: str | None = None
    error_detail: str | None = None


def _token_text(choice: dict) -> str:
    """The text a chunk's choice carries; empty for role-only and finish chunks."""
    if not isinstance(choice, dict):
        raise ValueError(f"a choice that is not a JSON object: {choice!r}")
    if "text" in choice:  # completions
        return choice["text"] or ""
    delta = choice.get("delta") or {}
    text = delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning") or ""
    if not text and delta.get("tool_calls"):
        return json.dumps(delta["tool_calls"])
    return text


class StreamingClient:
    """Sends `RequestSpec`s to `base_url` and times their streams."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._count_tokens = count_tokens

    async def send(self, spec: RequestSpec) -> Outcome:
        """Stream one request to its end; never raises for a failed request, the outcome says why."""
        path = "/v1/chat/completions" if spec.api == "chat" else "/v1/completions"
        outcome = Outcome(sent_at=time.perf_counter())
        try:
            async with self._session.post(self._base_url + path, json=spec.body()) as response:
                outcome.status_code = response.status
                if response.status != 200:
                    body = await response.text(errors="replace")
                    kind = "http_4xx" if response.status < 500 else "http_5xx"
                    return _failed(outcome, kind, f"{response.status}: {body}")
                await self._read_stream(response, outcome)
        except asyncio.TimeoutError as err:
            return _failed(outcome, "timeout", repr(err))
        except aiohttp.ClientPayloadError as err:
            return _failed(outcome, "incomplete_stream", repr(err))
        except aiohttp.ClientError as err:
            return _failed(outcome, "connection", repr(err))
        except ValueError as err:  # a data field that is not JSON
            return _failed(outcome, "bad_stream", repr(err))
        return outcome

    async def _read_stream(self, response: aiohttp.ClientResponse, outcome: Outcome) -> None:
        stream, parser, read_at = _Stream(outcome), SseParser(), 0.0
        async for raw in response.content.iter_any():
            read_at = time.perf_counter()  # before parsing, so parsing cost never counts as latency
            if not stream.take(parser.feed(raw), read_at):
                return
        if not stream.take(parser.finish(), read_at):
            return
        outcome.end_at = stream.last_token_at
        if not stream.done:
            _failed(outcome, "incomplete_stream", "the stream ended without [DONE]")
        if outcome.completion_tokens is None:
            self._count_locally(outcome, "".join(stream.pieces))

    def _count_locally(self, outcome: Outcome, text: str) -> None:
        if self._count_tokens is not None:
            outcome.completion_tokens, outcome.token_source = self._count_tokens(text), "tokenizer"
        else:
            chunks = len(outcome.itl_s) + (outcome.first_token_at is not None)
            outcome.completion_tokens, outcome.token_source = chunks, "chunks"


class _Stream:
    """What one stream has shown so far."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.pieces: list[str] = []
        self.last_token_at: float | None = None
        self.done = False

    def take(self, events: list[str], read_at: float) -> bool:
        """Account for the events of one read; False when the server reported an error in the stream."""
        for data in events:
            if data == "[DONE]":
                self.done = True
                continue
            chunk = json.loads(data)
            if not isinstance(chunk, dict):
                raise ValueError(f"a stream event that is not a JSON object: {data[:100]}")
            if "error" in chunk:
                _failed(self.outcome, "stream_error", json.dumps(chunk["error"]))
                return False
            if isinstance(tier := chunk.get("service_tier"), str):
                self.outcome.response_service_tier = tier
            text = "".join(_token_text(choice) for choice in chunk.get("choices") or ())
            if text:
                self.pieces.append(text)
                if self.last_token_at is None:
                    self.outcome.first_token_at = read_at
                else:
                    self.outcome.itl_s.append(read_at - self.last_token_at)
                self.last_token_at = read_at
            if usage := chunk.get("usage"):
                _take_usage(self.outcome, usage)
        return True


def _take_usage(outcome: Outcome, usage: dict) -> None:
    outcome.prompt_tokens = usage.get("prompt_tokens")
    outcome.completion_tokens = usage.get("completion_tokens")
    outcome.token_source = "usage"
    if energy := usage.get("energy"):
        outcome.energy_joules = energy.get("joules")
        outcome.energy_source = energy.get("source")


def _failed(outcome: Outcome, kind: str, detail: str) -> Outcome:
    outcome.error, outcome.error_detail = kind, detail[:ERROR_DETAIL_CHARS]
    return outcome
