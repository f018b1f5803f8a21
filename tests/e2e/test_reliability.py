"""Hostile load on the real server: disconnect storms, overload, shutdown with streams open, engine death.

Each test here ends or floods its server, so the module starts its own two: `storm` (LoRA, small
admission limits, a short shutdown grace) and `fragile` (killed through its engine). The deadlines below
only catch hangs; nothing asserts how fast the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.conftest import API_KEY, MODEL, _Launch
from tests.e2e.gauges import wait_for_idle_gauges
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e
HANG_S = 90  # a deadline that only a hang reaches
ADMITTED, QUEUED = 4, 12  # the storm server's admission limits
STORM_FLAGS = ["--max-num-seqs", "4", "--max-concurrent-requests", str(ADMITTED)]
STORM_FLAGS += ["--max-queued-requests", str(QUEUED), "--shutdown-grace-seconds", "4"]
STORM_FLAGS += ["--energy-meter", "estimated"]
# The embedded model's whole context (its position table), so the streams cut at SIGTERM are long ones.
STORM_CONTEXT = 2048
STORM_FLAGS += ["--max-model-len", str(STORM_CONTEXT)]


@pytest.fixture(scope="module")
def launches(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, _Launch]]:
    started = {
        "storm": _Launch(tmp_path_factory.mktemp("storm"), STORM_FLAGS),
        "fragile": _Launch(tmp_path_factory.mktemp("fragile"), ["--no-enable-lora", "--max-num-seqs", "8"]),
    }
    for launch in started.values():
        launch.ready()
    yield started
    started["storm"].stop_later()  # its log is checked for tracebacks at the session's end
    fragile = started["fragile"]
    if fragile.process.poll() is None:
        fragile.process.kill()
        fragile.process.wait()


@pytest.fixture(scope="module")
def storm(launches: dict[str, _Launch]) -> _Launch:
    return launches["storm"]


def in_flight(server: _Launch) -> dict[str, int]:
    with httpx.Client(base_url=server.base_url, headers=auth(), timeout=30) as http:
        return {
            f"{a['name']}@{a['version']}": a["in_flight"] for a in http.get("/v1/adapters").json()["data"]
        }


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


def random_body(rng: random.Random) -> tuple[str, dict]:
    model = rng.choice([MODEL, "demo-alpha", "demo-beta"])
    body = {
        "model": model,
        "max_tokens": rng.randint(40, 300),
        "ignore_eos": True,
        "stream": rng.random() < 0.6,
    }
    if rng.random() < 0.5:
        return "/v1/chat/completions", body | {"messages": [{"role": "user", "content": "tell me more"}]}
    return "/v1/completions", body | {"prompt": "Once upon a time"}


async def hang_up(port: int, path: str, body: dict, after_s: float, rng: random.Random) -> None:
    """Send a request over a raw socket, then vanish after `after_s`, politely or with a reset."""
    payload = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {API_KEY}\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + payload)
    await writer.drain()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reader.read(-1), after_s)
    if rng.random() < 0.5:
        writer.transport.abort()  # RST
    else:
        writer.close()  # FIN


def test_overload_is_answered_429_with_retry_after_and_every_admitted_request_finishes(
    storm: _Launch,
) -> None:
    capacity = ADMITTED + QUEUED

    async def flood() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=10 * capacity)
        async with httpx.AsyncClient(
            base_url=storm.base_url, headers=auth(), timeout=HANG_S, limits=limits
        ) as http:
            body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 24, "ignore_eos": True}
            return await asyncio.gather(
                *(http.post("/v1/completions", json=body) for _ in range(10 * capacity))
            )

    responses = asyncio.run(flood())
    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {200, 429}, statuses
    refused = [response for response in responses if response.status_code == 429]
    assert refused
    for response in refused:
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["type"] == "rate_limit_error"
    answered = [response.json() for response in responses if response.status_code == 200]
    assert len(answered) >= capacity
    assert all(body["usage"]["completion_tokens"] == 24 for body in answered)


def test_a_disconnect_storm_leaks_nothing_and_delete_and_sigterm_complete(storm: _Launch) -> None:
    rng = random.Random(20261123)

    async def storm_waves() -> None:
        for _ in range(8):  # 8 waves of 25: 200 clients that vanish at random moments
            waves = []
            for _ in range(25):
                path, body = random_body(rng)
                waves.append(hang_up(storm.port, path, body, rng.uniform(0.0, 0.8), rng))
            await asyncio.gather(*waves)

    asyncio.run(storm_waves())
    wait_for_idle_gauges(storm, HANG_S)
    wait_until(
        lambda: not any(in_flight(storm).values()), "every adapter's in-flight count back to 0", HANG_S
    )
    with httpx.Client(base_url=storm.base_url, headers=auth(), timeout=HANG_S) as http:
        assert http.delete("/v1/adapters/demo-beta").status_code == 200
        assert (
            http.post(
                "/v1/completions", json={"model": MODEL, "prompt": "still", "max_tokens": 2}
            ).status_code
            == 200
        )

    # A full batch of streams, each as long as the context allows, still running at SIGTERM: the grace
    # period (4 s) cuts them 2 s in, and each must end with an error event and [DONE], and the process
    # must still exit cleanly. Any that got to its end first ends as usual, with [DONE].
    streams: list[list[str]] = [[] for _ in range(ADMITTED)]
    first_tokens = [threading.Event() for _ in range(ADMITTED)]

    def long_stream(index: int) -> None:
        body = {"model": MODEL, "prompt": "Once", "max_tokens": STORM_CONTEXT - 16, "ignore_eos": True}
        with (
            httpx.Client(base_url=storm.base_url, headers=auth(), timeout=HANG_S) as http,
            http.stream("POST", "/v1/completions", json={**body, "stream": True}) as response,
        ):
            for line in response.iter_lines():
                if line.startswith("data: "):
                    streams[index].append(line.removeprefix("data: "))
                    first_tokens[index].set()

    readers = [threading.Thread(target=long_stream, args=(index,)) for index in range(ADMITTED)]
    for reader in readers:
        reader.start()
    assert all(first_token.wait(HANG_S) for first_token in first_tokens)
    storm.process.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal it caught once shutdown is complete, so a clean exit reads -SIGTERM.
    assert storm.process.wait(timeout=HANG_S) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in storm.log_path.read_text()
    for reader in readers:
        reader.join(HANG_S)
    assert all(events[-1] == "[DONE]" for events in streams)
    cut = [json.loads(events[-2]) for events in streams if "error" in json.loads(events[-2])]
    assert cut, "every stream of the batch ran to its end within 2 s"
    assert all("shutting down" in event["error"]["message"] for event in cut)


def test_engine_death_answers_in_flight_requests_then_exits_non_zero(launches: dict[str, _Launch]) -> None:
    fragile = launches["fragile"]
    outcomes: dict[str, object] = {}
    streaming = threading.Barrier(3)

    def stream(name: str) -> None:
        body = {"model": MODEL, "prompt": "Once", "max_tokens": 900, "ignore_eos": True, "stream": True}
        with (
            httpx.Client(base_url=fragile.base_url, headers=auth(), timeout=HANG_S) as http,
            http.stream("POST", "/v1/completions", json=body) as response,
        ):
            lines = []
            for line in response.iter_lines():
                if line.startswith("data: "):
                    lines.append(line.removeprefix("data: "))
                    if len(lines) == 2:
                        streaming.wait(HANG_S)
            outcomes[name] = lines

    def plain() -> None:
        body = {"model": MODEL, "prompt": "Once", "max_tokens": 900, "ignore_eos": True}
        with httpx.Client(base_url=fragile.base_url, headers=auth(), timeout=HANG_S) as http:
            outcomes["plain"] = http.post("/v1/completions", json=body).status_code

    threads = [threading.Thread(target=stream, args=(f"s{i}",)) for i in range(2)]
    threads.append(threading.Thread(target=plain))
    for thread in threads:
        thread.start()
    streaming.wait(HANG_S)
    engine_cores = [
        p for p in psutil.Process(fragile.process.pid).children(recursive=True) if "EngineCore" in p.name()
    ]
    assert engine_cores
    for process in engine_cores:
        process.kill()
    for thread in threads:
        thread.join(HANG_S)
    assert fragile.process.wait(timeout=HANG_S) != 0
    for name in ("s0", "s1"):
        lines = outcomes[name]
        assert lines[-1] == "[DONE]"
        assert "error" in json.loads(lines[-2])
    assert outcomes["plain"] == 503
    assert "the engine died" in Path(fragile.log_path).read_text()
