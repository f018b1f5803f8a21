"""Oversized input is refused before it is parsed or rendered, and never stalls anyone else's request."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

from tests.e2e.conftest import MODEL, Server

pytestmark = pytest.mark.e2e
SMALL = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
# Far beyond what could ever stall only this request: a 20 MB message used to hold every chat for 30 s.
STALL_S = 10.0


def post(server: Server, body: dict) -> tuple[int, dict, float]:
    started = time.monotonic()
    with server.http() as http:
        response = http.post("/v1/chat/completions", json=body)
    return response.status_code, response.json(), time.monotonic() - started


@pytest.mark.parametrize(
    ("size", "status", "code"),
    [(20 * 2**20, 413, "request_too_large"), (2**20, 400, "context_length_exceeded")],
)
def test_huge_messages_are_refused_while_small_requests_go_on(
    server: Server, size: int, status: int, code: str
) -> None:
    huge = {**SMALL, "messages": [{"role": "user", "content": "x" * size}]}
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        big = pool.submit(post, server, huge)
        small = [pool.submit(post, server, SMALL) for _ in range(4)]
        big_status, big_body, big_s = big.result()
        results = [future.result() for future in small]
    assert (big_status, big_body["error"]["code"]) == (status, code)
    assert big_s < STALL_S
    assert all(status == 200 for status, _, _ in results)
    assert all(took < STALL_S for _, _, took in results)


def test_a_long_completion_prompt_is_refused_before_tokenization(server: Server) -> None:
    with server.http() as http:
        response = http.post("/v1/completions", json={"model": MODEL, "prompt": "y" * 2**20, "max_tokens": 1})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert response.json()["error"]["param"] == "prompt"
