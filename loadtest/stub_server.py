"""A cheap OpenAI-compatible streaming stub server, so the harness can measure its own capacity.

The stub answers `/v1/chat/completions` and `/v1/completions` with exactly `max_tokens` tokens of
fixed text (finish reason `length`), optionally paced by a time to first token and an inter-token
latency, and counts tokens on `/metrics` under the vLLM names the harness reconciles against. Like
OpenAI, it names in every response the `service_tier` that served the request (`default` for `auto`).

Run it with `python -m loadtest.stub_server --port 8100`, or call `serve_stub(...)`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from loadtest.stub_fields import (
    DEFAULT_MAX_TOKENS,
    BadRequest,
    count_words,
    error_body,
    max_tokens,
    service_tier,
)

__all__ = ["DEFAULT_MAX_TOKENS", "TOKEN_TEXT", "StubApp", "main", "serve_stub"]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TOKEN_TEXT = " tok"
"""The text of every generated token."""

_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_DONE = b"data: [DONE]\n\n"
_TOKEN_JSON = json.dumps(TOKEN_TEXT).encode()

# A chunk is the per-request head (id, object, created, model) followed by one of these tails.
_HEAD = b'data: {"id":"%s","object":"%s","created":%d,"model":%s,"service_tier":"%s","choices":'
_CHAT_ROLE = (
    b'[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
)
_CHAT_TOKEN = b'[{"index":0,"delta":{"content":%s},"logprobs":null,"finish_reason":null}]}\n\n' % _TOKEN_JSON
_CHAT_FINISH = b'[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}]}\n\n'
_TEXT_TOKEN = b'[{"index":0,"text":%s,"logprobs":null,"finish_reason":null}]}\n\n' % _TOKEN_JSON
_TEXT_FINISH = b'[{"index":0,"text":"","logprobs":null,"finish_reason":"length"}]}\n\n'
_USAGE = b'[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}\n\n'


@dataclass(slots=True)
class _Reply:
    """What one generation answers with."""

    request_id: str
    created: int
    model: str
    chat: bool
    max_tokens: int
    prompt_tokens: int
    include_usage: bool
    service_tier: str  # as the response names it: the tier asked for, `default` for `auto` or none


class _Disconnected(Exception):
    """The client went away before its request body arrived."""


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    if message["type"] == "http.disconnect":
        raise _Disconnected
    if not message.get("more_body"):
        return message.get("body", b"")
    chunks = [message.get("body", b"")]
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


async def _send_body(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    length = (b"content-length", str(len(body)).encode())
    await send({"type": "http.response.start", "status": status, "headers": [*headers, length]})
    await send({"type": "http.response.body", "body": body})


class StubApp:
    """The stub as a raw ASGI application.

    Hand-rolled rather than built on FastAPI or Starlette because its whole purpose is a low
    per-request cost: the harness calibrates against it on the same machine, so every microsecond
    spent here is one the harness cannot use.

    Args:
        model: Id listed by `/v1/models` and the `model_name` label of the token counters. Requests
            may name any model; their name is echoed back.
        ttft_ms: Delay before the first token, in milliseconds.
        itl_ms: Delay between consecutive tokens, in milliseconds.
        registry: Where the token counters live; a fresh registry when omitted.
    """

    def __init__(
        self,
        model: str = "stub",
        ttft_ms: float = 0.0,
        itl_ms: float = 0.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if ttft_ms < 0 or itl_ms < 0:
            raise ValueError("ttft_ms and itl_ms must be >= 0")
        self.model = model
        self.ttft_s = ttft_ms / 1000
        self.itl_s = itl_ms / 1000
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = ["model_name"]
        prompt = Counter("vllm:prompt_tokens", "Prefill tokens processed.", labels, registry=self.registry)
        generation = Counter("vllm:generation_tokens", "Tokens generated.", labels, registry=self.registry)
        self._prompt_tokens = prompt.labels(model_name=model)
        self._generation_tokens = generation.labels(model_name=model)
        # A random prefix keeps ids unique across restarts; the counter keeps them cheap.
        self._id_prefix = os.urandom(4).hex()
        self._ids = itertools.count()
        models = {"object": "list", "data": [_model_card(model)]}
        self._models_body = json.dumps(models).encode()
        self._routes: dict[str, tuple[str, Callable[[Receive, Send], Awaitable[None]]]] = {
            "/health": ("GET", self._health),
            "/v1/models": ("GET", self._models),
            "/metrics": ("GET", self._metrics),
            "/v1/chat/completions": ("POST", self._chat),
            "/v1/completions": ("POST", self._completions),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        route = self._routes.get(scope["path"])
        if route is None:
            await _send_body(send, 404, error_body(f"no route {scope['path']}"), _JSON_HEADERS)
            return
        method, handler = route
        if scope["method"] != method:
            await _send_body(send, 405, error_body(f"use {method} on {scope['path']}"), _JSON_HEADERS)
            return
        try:
            await handler(receive, send)
        except BadRequest as exc:
            await _send_body(send, 400, error_body(exc.message, exc.param), _JSON_HEADERS)
        except _Disconnected:
            return

    async def _health(self, receive: Receive, send: Send) -> None:
        await _send_body(send, 200, b"", [])

    async def _models(self, receive: Receive, send: Send) -> None:
        await _send_body(send, 200, self._models_body, _JSON_HEADERS)

    async def _metrics(self, receive: Receive, send: Send) -> None:
        body = generate_latest(self.registry)
        await _send_body(send, 200, body, [(b"content-type", CONTENT_TYPE_LATEST.encode())])

    async def _chat(self, receive: Receive, send: Send) -> None:
        request = await self._parse(receive)
        messages = request.get("messages")
        if not isinstance(messages, list):
            raise BadRequest("'messages' must be a list", "messages")
        await self._generate(request, count_words(messages), chat=True, receive=receive, send=send)

    async def _completions(self, receive: Receive, send: Send) -> None:
        request = await self._parse(receive)
        if "prompt" not in request:
            raise BadRequest("'prompt' is required", "prompt")
        await self._generate(request, count_words(request["prompt"]), chat=False, receive=receive, send=send)

    async def _parse(self, receive: Receive) -> dict[str, Any]:
        raw = await _read_body(receive)
        try:
            request = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from exc
        if not isinstance(request, dict):
            raise BadRequest("request body must be a JSON object")
        return request

    async def _generate(
        self, request: dict[str, Any], prompt_tokens: int, *, chat: bool, receive: Receive, send: Send
    ) -> None:
        model = request.get("model", self.model)
        if not isinstance(model, str):
            raise BadRequest("'model' must be a string", "model")
        stream_options = request.get("stream_options")
        reply = _Reply(
            request_id=f"{'chatcmpl' if chat else 'cmpl'}-{self._id_prefix}{next(self._ids):x}",
            created=int(time.time()),
            model=model,
            chat=chat,
            max_tokens=max_tokens(request),
            prompt_tokens=prompt_tokens,
            include_usage=isinstance(stream_options, dict) and bool(stream_options.get("include_usage")),
            service_tier=service_tier(request),
        )
        if request.get("stream"):
            sent = await self._stream(reply, receive, send)
        else:
            sent = await self._respond(reply, receive, send)
        # Like vLLM, prompt tokens count once prefill is done (a first token exists).
        if sent:
            self._prompt_tokens.inc(prompt_tokens)
            self._generation_tokens.inc(sent)

    async def _stream(self, reply: _Reply, receive: Receive, send: Send) -> int:
        """Send the SSE stream; return how many tokens reached the client."""
        chat, max_tokens = reply.chat, reply.max_tokens
        kind = b"chat.completion.chunk" if chat else b"text_completion"
        model_json = json.dumps(reply.model).encode()
        head = _HEAD % (
            reply.request_id.encode(),
            kind,
            reply.created,
            model_json,
            reply.service_tier.encode(),
        )
        first = head + _CHAT_ROLE + head + _CHAT_TOKEN if chat else head + _TEXT_TOKEN
        token = head + (_CHAT_TOKEN if chat else _TEXT_TOKEN)
        trailer = head + (_CHAT_FINISH if chat else _TEXT_FINISH)
        if reply.include_usage:
            prompt_tokens = reply.prompt_tokens
            trailer += head + _USAGE % (prompt_tokens, max_tokens, prompt_tokens + max_tokens)
        trailer += _DONE
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        if self.ttft_s and await _client_left(receive, self.ttft_s):
            return 0
        if self.itl_s == 0 or max_tokens == 1:
            # Nothing separates the tokens, so the whole stream goes out in one write.
            await send({"type": "http.response.body", "body": first + token * (max_tokens - 1) + trailer})
            return max_tokens
        await send({"type": "http.response.body", "body": first, "more_body": True})
        for sent in range(1, max_tokens):
            if await _client_left(receive, self.itl_s):
                return sent
            last = sent == max_tokens - 1
            body = token + trailer if last else token
            await send({"type": "http.response.body", "body": body, "more_body": not last})
        return max_tokens

    async def _respond(self, reply: _Reply, receive: Receive, send: Send) -> int:
        """Send one JSON body after the whole generation time; return the tokens sent."""
        max_tokens, prompt_tokens = reply.max_tokens, reply.prompt_tokens
        duration_s = self.ttft_s + self.itl_s * (max_tokens - 1)
        if duration_s and await _client_left(receive, duration_s):
            return 0
        text = TOKEN_TEXT * max_tokens
        if reply.chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
        else:
            choice = {"index": 0, "text": text, "logprobs": None}
        choice["finish_reason"] = "length"
        body = {
            "id": reply.request_id,
            "object": "chat.completion" if reply.chat else "text_completion",
            "created": reply.created,
            "model": reply.model,
            "service_tier": reply.service_tier,
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": max_tokens,
                "total_tokens": prompt_tokens + max_tokens,
            },
        }
        await _send_body(send, 200, json.dumps(body).encode(), _JSON_HEADERS)
        return max_tokens


def _model_card(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": int(time.time()), "owned_by": "wattserve-stub"}


async def _client_left(receive: Receive, delay_s: float) -> bool:
    """Wait `delay_s`; True as soon as the client disconnects.

    Once the body is read, the next `receive()` returns only `http.disconnect`, so waiting on it
    stops a paced stream early instead of generating into a closed socket.
    """
    watcher = asyncio.ensure_future(receive())
    try:
        done, _ = await asyncio.wait({watcher}, timeout=delay_s)
    finally:
        watcher.cancel()
    return bool(done)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def serve_stub(
    host: str = "127.0.0.1",
    port: int = 8000,
    model: str = "stub",
    ttft_ms: float = 0.0,
    itl_ms: float = 0.0,
) -> None:
    """Serve the stub until interrupted (blocking).

    Args:
        host: Interface to bind.
        port: TCP port to bind.
        model: Model id listed by `/v1/models`.
        ttft_ms: Delay before the first token, in milliseconds.
        itl_ms: Delay between tokens, in milliseconds.
    """
    app = StubApp(model=model, ttft_ms=ttft_ms, itl_ms=itl_ms)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
    uvicorn.Server(config).run()


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve the stub."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.stub_server",
        description="OpenAI-compatible streaming stub server.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=8000, help="port to bind")
    parser.add_argument("--model", default="stub", help="model id listed by /v1/models")
    parser.add_argument("--ttft-ms", type=float, default=0.0, help="delay before the first token, ms")
    parser.add_argument("--itl-ms", type=float, default=0.0, help="delay between tokens, ms")
    args = parser.parse_args(argv)
    if args.ttft_ms < 0 or args.itl_ms < 0:
        parser.error("--ttft-ms and --itl-ms must be >= 0")
    serve_stub(args.host, args.port, args.model, args.ttft_ms, args.itl_ms)


if __name__ == "__main__":
    main()
