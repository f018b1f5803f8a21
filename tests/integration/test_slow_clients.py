"""Clients that connect or read badly, against the app on the fake engine behind a real uvicorn.

Header limits and the write timeout live in the connection (uvicorn's protocol), so these tests speak
raw HTTP over loopback sockets to a server started as `wattserve serve` configures it.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from server.api.http_server import uvicorn_config
from server.compose import create_app
from server.energy.meters.base import NullEnergyMeter
from server.engine.types import ChoiceDelta, GenerationStep, PreparedPrompt, SamplingSpec
from server.settings import ServerSettings
from tests.integration.fake_engine import FakeEngine
from tests.waiting import until, until_checked

GAUGES = (
    "wattserve_requests_admitted",
    "wattserve_requests_running",
    "wattserve_requests_waiting",
    "wattserve_requests_queued",
    "wattserve_responses_awaiting_client",
)
STEP_TEXT = "x" * 65536  # each step far larger than a socket buffer, so an unread stream fills them fast


class WordyEngine(FakeEngine):
    """Steps of `STEP_TEXT`, so a stream nobody reads fills the connection's buffers in a few steps."""

    max_model_len = 1_000_000

    async def generate(  # type: ignore[override]
        self, prompt: PreparedPrompt, spec: SamplingSpec, request_id: str, **_: object
    ) -> AsyncIterator[GenerationStep]:
        count = spec.max_tokens or 1
        for index in range(count):
            await asyncio.sleep(0)  # an engine step's boundary: the loop runs between steps, as in vLLM
            last = index == count - 1
            yield GenerationStep(
                len(prompt.token_ids),
                [ChoiceDelta(0, STEP_TEXT, 1, None, "length" if last else None)],
                last,
                1,
            )


@dataclass
class Served:
    port: int
    server: uvicorn.Server

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    settings = ServerSettings(
        port=_free_port(),
        max_concurrent_requests=2,
        max_queued_requests=0,
        h11_max_incomplete_event_size=8192,
        h11_max_header_count=20,
        write_timeout_seconds=1.0,
        scrape_min_interval_ms=0,
        disable_uvicorn_access_log=True,
    )
    app = create_app(settings, WordyEngine, meter=NullEnergyMeter())
    server = uvicorn.Server(uvicorn_config(app, settings))
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started, "the server started")
    try:
        yield Served(settings.port, server)
    finally:
        server.should_exit = True
        await task


async def raw_exchange(port: int, request: bytes) -> bytes:
    """Send `request` on a fresh connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await reader.read()
    except ConnectionResetError:
        return b""  # closed before everything was sent
    finally:
        writer.close()


async def gauges(served: Served) -> dict[str, float]:
    async with served.client() as http:
        page = (await http.get("/metrics")).text
    return {
        family.name: family.samples[0].value
        for family in text_string_to_metric_families(page)
        if family.name in GAUGES
    }


@pytest.fixture
def unread_streams() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def unread_stream(port: int, max_tokens: int) -> socket.socket:
    """A streaming request on a socket that is never read (a small receive buffer fills at once)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    body = json.dumps(
        {"model": "fake-model", "prompt": "go", "max_tokens": max_tokens, "stream": True}
    ).encode()
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    return sock


async def test_a_head_larger_than_the_limit_gets_431_and_others_are_served(served: Served) -> None:
    answer = await raw_exchange(served.port, b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 100_000)
    assert answer.startswith(b"HTTP/1.1 431 ")
    async with served.client() as http:
        assert (await http.get("/health")).status_code == 200


async def test_too_many_headers_get_431(served: Served) -> None:
    headers = b"".join(b"x-h%d: v\r\n" % index for index in range(21))
    answer = await raw_exchange(served.port, b"GET /health HTTP/1.1\r\nhost: x\r\n" + headers + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")


async def test_heads_within_the_limits_and_large_bodies_pass(served: Served) -> None:
    headers = {f"x-h{index}": "v" * 600 for index in range(10)}  # with httpx's own: 17 headers, 6 KiB
    body = {"model": "fake-model", "prompt": "word " * 20_000, "max_tokens": 1}
    async with served.client() as http:
        response = await http.post("/v1/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text  # a 100 kB body: only the head is limited


async def gauges_reach(served: Served, wanted: dict[str, float]) -> None:
    """Poll the gauges until they read `wanted` (others unchecked)."""

    async def reached() -> bool:
        now = await gauges(served)
        return now == {**now, **wanted}

    await until_checked(reached, f"gauges reading {wanted}")


async def test_unread_streams_give_back_their_slots_when_the_engine_is_done(
    served: Served, unread_streams: list[socket.socket]
) -> None:
    unread_streams += [unread_stream(served.port, 100) for _ in range(2)]
    # Both streams' engine work ends while their clients read nothing: the slots are free again.
    await gauges_reach(served, {"wattserve_requests_admitted": 0, "wattserve_responses_awaiting_client": 2})
    async with served.client() as http:
        body = {"model": "fake-model", "prompt": "go", "max_tokens": 2}
        for _ in range(3):  # more than --max-concurrent-requests 2 with no queue: a held slot would 429
            assert (await http.post("/v1/completions", json=body)).status_code == 200
    # The write timeout (1 s) closes the unread connections; everything they held is released.
    await gauges_reach(served, dict.fromkeys(GAUGES, 0.0))


async def test_a_client_that_stops_reading_mid_generation_is_cut_by_the_write_timeout(
    served: Served, unread_streams: list[socket.socket]
) -> None:
    unread_streams.append(unread_stream(served.port, 100_000))  # longer than the test: never finishes
    await gauges_reach(served, {"wattserve_requests_running": 1})
    # Cut by the write timeout while the engine still works for it: aborted, slot and gauges released.
    await gauges_reach(served, dict.fromkeys(GAUGES, 0.0))
