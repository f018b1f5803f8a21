"""Clients that connect, read or scrape badly do not stall the others, on the real server.

One server with two admission slots and a short write timeout (shared with the router test): unread
streams give their slots back once the engine is done with them, a header flood is refused while others
keep their latency, ten scrapers in a loop do not slow small requests, and every gauge returns to 0.
"""

from __future__ import annotations

import json
import socket
import threading

import httpx
import pytest

from tests.e2e.conftest import API_KEY, MODEL, Server
from tests.e2e.gauges import wait_for_gauges, wait_for_idle_gauges
from tests.e2e.latency_probe import latency_ratio, ratio_tolerable

pytestmark = pytest.mark.e2e
# Far more than the kernel's socket buffers hold: 6 choices x 900 tokens, each with 20 alternatives.
UNREAD_STREAM = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 900,
    "ignore_eos": True,
    "n": 6,
    "temperature": 1.0,
    "logprobs": True,
    "top_logprobs": 20,
    "stream": True,
}


@pytest.fixture(scope="module")
def slow_server(small_admission_server: Server) -> Server:
    """Two admission slots, a short write timeout and head limit (shared with the router test)."""
    return small_admission_server


def unread_stream(server: Server) -> socket.socket:
    """Send a long streaming request on a socket with a tiny receive buffer, and never read it."""
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    body = json.dumps(UNREAD_STREAM).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {API_KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def test_unread_streams_give_back_their_slots_once_the_engine_is_done(slow_server: Server) -> None:
    sockets = [unread_stream(slow_server) for _ in range(4)]  # two slots, two queued: all held
    try:
        wait_for_gauges(
            slow_server,
            {
                "wattserve_requests_admitted": 0,
                "wattserve_requests_queued": 0,
                "wattserve_responses_awaiting_client": 4,
            },
        )
        small = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        with slow_server.http() as http:
            statuses = [http.post("/v1/chat/completions", json=small).status_code for _ in range(6)]
        assert statuses == [200] * 6
    finally:
        for sock in sockets:
            sock.close()
    wait_for_idle_gauges(slow_server)


def test_a_header_flood_is_refused_and_others_keep_their_latency(slow_server: Server) -> None:
    host, port = slow_server.base_url.removeprefix("http://").split(":")
    answers: list[bytes] = []

    def flood(started: threading.Event) -> None:
        for round_index in range(8):
            with socket.create_connection((host, int(port)), timeout=60) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-flood: ")
                if round_index == 0:
                    started.set()
                try:
                    for _ in range(2000):  # up to 64 MB, never ending the header
                        sock.sendall(b"a" * 32768)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the server closed the connection: what a flood should get
                try:
                    answers.append(sock.recv(4096))
                except ConnectionResetError:
                    answers.append(b"")

    ratio = latency_ratio(slow_server, flood)
    assert answers
    assert all(answer.startswith(b"HTTP/1.1 431 ") or answer == b"" for answer in answers), answers
    assert ratio_tolerable(ratio), ratio
    wait_for_idle_gauges(slow_server)


def test_ten_scrapers_in_a_loop_do_not_slow_small_requests(slow_server: Server) -> None:
    stop = threading.Event()
    scrapes = [0] * 10

    def scraper(index: int) -> None:
        with httpx.Client(base_url=slow_server.base_url, timeout=60) as http:
            while not stop.is_set():
                assert http.get("/metrics").status_code == 200
                scrapes[index] += 1

    threads = [threading.Thread(target=scraper, args=(i,), daemon=True) for i in range(10)]

    def scrape(started: threading.Event) -> None:
        # The scrapers run on their own threads until the small requests have been timed.
        for thread in threads:
            thread.start()
        started.set()

    try:
        ratio = latency_ratio(slow_server, scrape)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert all(scrapes), scrapes
    assert ratio_tolerable(ratio), ratio
    wait_for_idle_gauges(slow_server)
