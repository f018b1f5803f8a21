"""The streaming client against a small in-process aiohttp server: timing, token counts and error kinds.

The server and the client share one process and one fake clock, which stands in for the client's
`time.perf_counter()` and moves only when the server says: a test can check that a token was timed at
the network write that completed it, and what gap the client measured, whatever the machine's load.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from loadtest import client as client_module
from loadtest.client import ERROR_DETAIL_CHARS, Outcome, StreamingClient
from loadtest.workload import RequestSpec

Handler = Callable[[web.StreamResponse], Awaitable[None]]

CHAT = RequestSpec(
    model="base", api="chat", prompt=None, messages=[{"role": "user", "content": "hi"}], max_tokens=8
)
COMPLETION = RequestSpec(model="sql-lora", api="completions", prompt="SELECT", messages=None, max_tokens=8)


def event(payload: dict | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


def chat_chunk(content: str | None = None, role: str | None = None, usage: dict | None = None) -> bytes:
    delta = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    choices = [] if usage is not None else [{"index": 0, "delta": delta, "finish_reason": None}]
    return event({"id": "c1", "object": "chat.completion.chunk", "choices": choices, "usage": usage})


def usage(prompt: int, completion: int, energy: dict | None = None) -> dict:
    body = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if energy is not None:
        body["energy"] = energy
    return body


DONE = event("[DONE]")


class FakeClock:
    """The client's `perf_counter`: still until advanced; each reading says the client has read."""

    def __init__(self) -> None:
        self.now_s = 1000.0
        self.read = asyncio.Event()

    def perf_counter(self) -> float:
        self.read.set()
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


class StubServer:
    """Serves one streaming scenario per case name, under `/{case}/v1/...`, and records what it saw."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.cases: dict[str, Handler] = {}
        self.stamps: dict[str, list[float]] = {}
        self.bodies: dict[str, dict] = {}
        self.paths: dict[str, str] = {}

    def case(self, name: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.cases[name] = handler
            return handler

        return register

    def stamp(self, name: str) -> float:
        """Record now on the shared clock, just before a write the test times."""
        now = self.clock.now_s
        self.stamps.setdefault(name, []).append(now)
        return now

    async def deliver(self, response: web.StreamResponse, data: bytes) -> None:
        """Write `data` and wait until the client has read it (it reads the clock on every read)."""
        self.clock.read.clear()
        await response.write(data)
        await asyncio.wait_for(self.clock.read.wait(), 5)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["case"]
        self.bodies[name] = await request.json()
        self.paths[name] = request.path
        if name.startswith("status"):
            status = int(name.removeprefix("status"))
            return web.json_response({"error": {"message": f"refused with {status}"}}, status=status)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await self.cases[name](response)
        await response.write_eof()
        return response


@pytest.fixture
async def stub(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[StubServer, Callable[[str], StreamingClient]]]:
    clock = FakeClock()
    monkeypatch.setattr(client_module, "time", clock)
    stub = StubServer(clock)
    app = web.Application()
    app.router.add_post("/{case}/v1/chat/completions", stub.handle)
    app.router.add_post("/{case}/v1/completions", stub.handle)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:

        def client(case: str, count_tokens: Callable[[str], int] | None = None) -> StreamingClient:
            return StreamingClient(session, str(server.make_url(f"/{case}/")), count_tokens=count_tokens)

        yield stub, client


Stub = tuple[StubServer, Callable[..., StreamingClient]]


def assert_ok(outcome: Outcome) -> None:
    assert outcome.error is None, (outcome.error, outcome.error_detail)
    assert outcome.status_code == 200


async def test_role_only_chunk_is_not_the_first_token(stub: Stub) -> None:
    server, client = stub

    @server.case("role")
    async def _(response: web.StreamResponse) -> None:
        await server.deliver(response, chat_chunk(role="assistant", content=""))
        server.clock.advance(0.2)
        server.stamp("role")
        await response.write(chat_chunk("Hel") + chat_chunk("lo"))
        await response.write(chat_chunk(usage=usage(5, 2)) + DONE)

    outcome = await client("role").send(CHAT)
    assert_ok(outcome)
    assert outcome.first_token_at - outcome.sent_at == pytest.approx(0.2)
    assert outcome.first_token_at == server.stamps["role"][0]
    assert (outcome.prompt_tokens, outcome.completion_tokens, outcome.token_source) == (5, 2, "usage")
    assert outcome.energy_joules is None
    assert outcome.energy_source is None
    assert server.paths["role"] == "/role/v1/chat/completions"
    assert server.bodies["role"]["stream"] is True
    assert server.bodies["role"]["stream_options"] == {"include_usage": True}
    assert server.bodies["role"]["messages"] == CHAT.messages


async def test_event_split_across_two_writes_is_timed_at_the_second(stub: Stub) -> None:
    server, client = stub
    token = chat_chunk("Hello")
    half = len(token) // 2

    @server.case("split")
    async def _(response: web.StreamResponse) -> None:
        server.stamp("split")
        await server.deliver(response, token[:half])
        server.clock.advance(0.1)
        server.stamp("split")
        await response.write(token[half:])
        await response.write(chat_chunk(usage=usage(3, 1)) + DONE)

    outcome = await client("split").send(CHAT)
    assert_ok(outcome)
    first_write, second_write = server.stamps["split"]
    assert outcome.first_token_at == second_write
    assert outcome.first_token_at - first_write == pytest.approx(0.1)
    assert outcome.end_at == outcome.first_token_at
    assert outcome.itl_s == []
    assert outcome.completion_tokens == 1


async def test_usage_energy_is_recorded(stub: Stub) -> None:
    server, client = stub

    @server.case("energy")
    async def _(response: web.StreamResponse) -> None:
        await response.write(chat_chunk("a") + chat_chunk("b") + chat_chunk("c"))
        energy = {"joules": 1.25, "joules_per_output_token": 0.4167, "co2e_grams": 0.1, "source": "nvml"}
        await response.write(chat_chunk(usage=usage(7, 3, energy)))
        await response.write(DONE)

    outcome = await client("energy").send(CHAT)
    assert_ok(outcome)
    assert (outcome.prompt_tokens, outcome.completion_tokens, outcome.token_source) == (7, 3, "usage")
    assert outcome.energy_joules == 1.25
    assert outcome.energy_source == "nvml"


async def stream_without_usage(response: web.StreamResponse) -> None:
    # Four token chunks (two in one write, so one read may carry both), a role-only chunk, a finish chunk.
    await response.write(chat_chunk(role="assistant"))
    await response.write(chat_chunk("one "))
    await response.write(chat_chunk("two ") + chat_chunk("three "))
    await response.write(chat_chunk("four"))
    finish = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    await response.write(event(finish) + DONE)


async def test_without_usage_tokens_are_counted_as_chunks(stub: Stub) -> None:
    server, client = stub
    server.case("chunks")(stream_without_usage)
    outcome = await client("chunks").send(CHAT)
    assert_ok(outcome)
    assert outcome.token_source == "chunks"
    assert outcome.completion_tokens == 4
    assert outcome.prompt_tokens is None
    assert len(outcome.itl_s) == 3


async def test_without_usage_a_tokenizer_counts_the_text(stub: Stub) -> None:
    server, client = stub
    server.case("tokenizer")(stream_without_usage)
    seen: list[str] = []

    def count_tokens(text: str) -> int:
        seen.append(text)
        return len(text)

    outcome = await client("tokenizer", count_tokens=count_tokens).send(CHAT)
    assert_ok(outcome)
    assert seen == ["one two three four"]
    assert (outcome.completion_tokens, outcome.token_source) == (18, "tokenizer")


async def test_stream_without_done_is_incomplete(stub: Stub) -> None:
    server, client = stub

    @server.case("nodone")
    async def _(response: web.StreamResponse) -> None:
        await response.write(chat_chunk("a") + chat_chunk("b"))

    outcome = await client("nodone").send(CHAT)
    assert outcome.status_code == 200
    assert outcome.error == "incomplete_stream"
    assert "[DONE]" in outcome.error_detail
    assert outcome.first_token_at is not None
    assert outcome.end_at is not None


@pytest.mark.parametrize(("status", "kind"), [(400, "http_4xx"), (404, "http_4xx"), (503, "http_5xx")])
async def test_http_errors_carry_status_and_body(stub: Stub, status: int, kind: str) -> None:
    _, client = stub
    outcome = await client(f"status{status}").send(CHAT)
    assert outcome.status_code == status
    assert outcome.error == kind
    assert outcome.error_detail.startswith(f"{status}: ")
    assert f"refused with {status}" in outcome.error_detail
    assert outcome.first_token_at is None
    assert outcome.completion_tokens is None


async def test_long_error_bodies_are_truncated() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=500, text="x" * 5000)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        outcome = await StreamingClient(session, str(server.make_url("/"))).send(CHAT)
    assert outcome.error == "http_5xx"
    assert len(outcome.error_detail) == ERROR_DETAIL_CHARS
    assert outcome.error_detail == ("500: " + "x" * 5000)[:ERROR_DETAIL_CHARS]


def unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_connection_refused() -> None:
    async with aiohttp.ClientSession() as session:
        outcome = await StreamingClient(session, f"http://127.0.0.1:{unused_port()}").send(CHAT)
    assert outcome.error == "connection"
    assert outcome.status_code is None
    assert outcome.error_detail


async def test_error_event_mid_stream(stub: Stub) -> None:
    server, client = stub

    @server.case("streamerror")
    async def _(response: web.StreamResponse) -> None:
        await response.write(chat_chunk("a"))
        error = {"message": "engine died", "type": "InternalServerError", "code": 500}
        await response.write(event({"error": error}) + DONE)

    outcome = await client("streamerror").send(CHAT)
    assert outcome.status_code == 200
    assert outcome.error == "stream_error"
    assert json.loads(outcome.error_detail)["message"] == "engine died"
    assert outcome.first_token_at is not None


async def test_non_json_data_is_a_bad_stream(stub: Stub) -> None:
    server, client = stub

    @server.case("badjson")
    async def _(response: web.StreamResponse) -> None:
        await response.write(event("not json") + DONE)

    outcome = await client("badjson").send(CHAT)
    assert outcome.error == "bad_stream"


async def test_completions_stream_reads_choice_text(stub: Stub) -> None:
    server, client = stub

    @server.case("completions")
    async def _(response: web.StreamResponse) -> None:
        def text_chunk(text: str, finish: str | None = None) -> bytes:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            return event({"object": "text_completion", "choices": [choice], "usage": None})

        await server.deliver(response, text_chunk(""))
        server.clock.advance(0.05)
        server.stamp("completions")
        await server.deliver(response, text_chunk(" *"))
        server.clock.advance(0.05)
        await response.write(text_chunk(" FROM", finish="length"))
        await response.write(event({"object": "text_completion", "choices": [], "usage": usage(2, 2)}))
        await response.write(DONE)

    outcome = await client("completions").send(COMPLETION)
    assert_ok(outcome)
    assert server.paths["completions"] == "/completions/v1/completions"
    assert server.bodies["completions"]["prompt"] == "SELECT"
    assert outcome.first_token_at == server.stamps["completions"][0]
    assert outcome.itl_s == [pytest.approx(0.05)]
    assert (outcome.completion_tokens, outcome.token_source) == (2, "usage")


async def test_inter_token_latencies_and_end_at_the_last_token(stub: Stub) -> None:
    server, client = stub
    pauses = (0.1, 0.15)

    @server.case("itl")
    async def _(response: web.StreamResponse) -> None:
        await response.write(chat_chunk(role="assistant", content=""))
        server.stamp("itl")
        await server.deliver(response, chat_chunk("a"))
        for pause, text in zip(pauses, "bc", strict=True):
            server.clock.advance(pause)
            server.stamp("itl")
            await server.deliver(response, chat_chunk(text))
        server.clock.advance(0.3)
        server.stamp("itl")
        await response.write(chat_chunk(usage=usage(4, 3)))
        await response.write(DONE)

    outcome = await client("itl").send(CHAT)
    assert_ok(outcome)
    first, second, third, usage_written = server.stamps["itl"]
    assert outcome.itl_s == [pytest.approx(pause) for pause in pauses]
    assert outcome.first_token_at == first
    assert outcome.end_at == third
    assert outcome.end_at < usage_written  # the usage chunk 300 ms later does not move the end
    assert outcome.end_at - outcome.first_token_at == pytest.approx(sum(outcome.itl_s))
    assert outcome.completion_tokens == 3


async def test_reasoning_and_tool_call_chunks_are_tokens(stub: Stub) -> None:
    server, client = stub

    @server.case("tools")
    async def _(response: web.StreamResponse) -> None:
        await server.deliver(response, chat_chunk(role="assistant"))
        server.clock.advance(0.05)
        server.stamp("tools")
        reasoning = {"choices": [{"index": 0, "delta": {"reasoning_content": "think"}}]}
        await server.deliver(response, event(reasoning))
        server.clock.advance(0.05)
        call = {"index": 0, "id": "t1", "function": {"name": "f", "arguments": "{}"}}
        await response.write(event({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}))
        await response.write(DONE)

    outcome = await client("tools").send(CHAT)
    assert_ok(outcome)
    assert outcome.first_token_at == server.stamps["tools"][0]
    assert outcome.itl_s == [pytest.approx(0.05)]
    assert (outcome.completion_tokens, outcome.token_source) == (2, "chunks")


async def test_connection_dropped_mid_stream_is_incomplete() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(chat_chunk("a"))
        await response.write(chat_chunk("b")[:10])
        request.transport.close()  # no terminating chunk: the chunked body is cut short
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        outcome = await StreamingClient(session, str(server.make_url("/"))).send(CHAT)
    assert outcome.status_code == 200
    assert outcome.error == "incomplete_stream"
    assert "ClientPayloadError" in outcome.error_detail  # aiohttp noticed the cut, not the missing [DONE]


@pytest.mark.parametrize("data", ["null", "[1, 2]", '{"choices": [null]}'])
async def test_json_that_is_not_an_object_is_a_bad_stream(stub: Stub, data: str) -> None:
    server, client = stub

    @server.case("notobject")
    async def _(response: web.StreamResponse) -> None:
        await response.write(event(data) + DONE)

    outcome = await client("notobject").send(CHAT)
    assert outcome.error == "bad_stream"


async def test_bare_cr_stream_ending_in_cr_is_complete(stub: Stub) -> None:
    server, client = stub

    @server.case("barecr")
    async def _(response: web.StreamResponse) -> None:
        stream = chat_chunk("a") + chat_chunk(usage=usage(1, 1)) + DONE
        await response.write(stream.replace(b"\n", b"\r"))

    outcome = await client("barecr").send(CHAT)
    assert outcome.first_token_at is not None  # the events before the last are read
    assert outcome.error is None, outcome.error_detail


async def test_service_tier_is_sent_and_the_echoed_tier_recorded(stub: Stub) -> None:
    server, client = stub

    @server.case("tier")
    async def _(response: web.StreamResponse) -> None:
        # OpenAI names the tier that served the request on every chunk: `auto` comes back as `default`.
        for piece in (chat_chunk("a"), chat_chunk("b"), chat_chunk(usage=usage(2, 2))):
            chunk = json.loads(piece.decode().removeprefix("data: "))
            await response.write(event({**chunk, "service_tier": "default"}))
        await response.write(DONE)

    spec = RequestSpec(
        model="base", api="chat", prompt=None, messages=CHAT.messages, max_tokens=2, service_tier="auto"
    )
    outcome = await client("tier").send(spec)
    assert_ok(outcome)
    assert server.bodies["tier"]["service_tier"] == "auto"
    assert outcome.response_service_tier == "default"


async def test_no_service_tier_sent_and_none_echoed_by_default(stub: Stub) -> None:
    server, client = stub

    @server.case("untiered")
    async def _(response: web.StreamResponse) -> None:
        await response.write(chat_chunk("a") + chat_chunk(usage=usage(2, 1)) + DONE)

    outcome = await client("untiered").send(CHAT)
    assert_ok(outcome)
    assert "service_tier" not in server.bodies["untiered"]
    assert outcome.response_service_tier is None
