"""response_format schemas on the real server: caps refused at once, and clients that send schemas which
take seconds to compile, then leave, hold neither the small requests nor a later structured request.

The shared structured-output server (tests/e2e/conftest.py) raises the schema caps so the attack's
schemas are allowed, and gives compiles a deadline no attack schema reaches: what is under test is that a
compile stops when its client leaves. Bounds are ratios against the same server undisturbed; nothing
asserts how fast the machine is.
"""

from __future__ import annotations

import statistics
import threading
import time

import httpx
import pytest

from tests.e2e.conftest import MODEL, SCHEMA_PROPERTIES_CAP, Server
from tests.e2e.gauges import gauges, wait_for_idle_gauges
from tests.e2e.latency_probe import latency_ratio, ratio_tolerable
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e
ATTACKERS, ROUNDS = 3, 3
LEAVE_AFTER_S = 1.5  # each attacker hangs up this long after sending
# Thousands of optional properties: seconds of compiling for the embedded model's vocabulary.
ATTACK_PROPERTIES = SCHEMA_PROPERTIES_CAP // 2
# A later small structured request may take this many times its undisturbed time (a held one took
# tens of seconds: hundreds of times).
HELD_RATIO = 20.0


def structured_chat(schema: dict) -> dict:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,  # free whitespace can keep a random model in the grammar until max_tokens
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    }


def small_schema(tag: str) -> dict:
    # A new schema each time, so every request compiles (in the gate and in the engine) anew.
    return {"type": "object", "properties": {f"{tag}_a": {"type": "integer"}}}


def attack_schema(tag: str) -> dict:
    return {
        "type": "object",
        "properties": {f"{tag}_{i}": {"type": "string"} for i in range(ATTACK_PROPERTIES)},
    }


def structured_seconds(server: Server, tag: str) -> float:
    with server.http() as http:
        started = time.monotonic()
        response = http.post("/v1/chat/completions", json=structured_chat(small_schema(tag)))
        seconds = time.monotonic() - started
    assert response.status_code == 200, response.text
    return seconds


def test_a_schema_over_a_cap_is_refused_naming_response_format(structured_server: Server) -> None:
    schema = {"type": "object", "properties": {"v": {"enum": [f"e{i}" for i in range(1001)]}}}
    with structured_server.http() as http:
        response = http.post("/v1/chat/completions", json=structured_chat(schema))
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("response_format", "response_format_too_large")
    assert "--max-schema-enum-values" in error["message"]


def test_clients_leaving_slow_schemas_hold_no_one(structured_server: Server) -> None:
    undisturbed = statistics.median(structured_seconds(structured_server, f"before{i}") for i in range(3))
    answered: list[int] = []

    def attacker(index: int) -> None:
        with structured_server.http() as http:
            for round_ in range(ROUNDS):
                body = structured_chat(attack_schema(f"c{index}r{round_}"))
                try:
                    response = http.post("/v1/chat/completions", json=body, timeout=LEAVE_AFTER_S)
                    answered.append(response.status_code)
                except httpx.TimeoutException:
                    pass  # the client hangs up, as the attack does

    def misbehave(started: threading.Event) -> None:
        threads = [threading.Thread(target=attacker, args=(i,), daemon=True) for i in range(ATTACKERS)]
        for thread in threads:
            thread.start()
        wait_until(
            lambda: gauges(structured_server)["wattserve_requests_admitted"] >= 1, "the attack admitted"
        )
        started.set()
        for thread in threads:
            thread.join()

    ratio = latency_ratio(structured_server, misbehave)
    later = structured_seconds(structured_server, "after")
    assert ratio_tolerable(ratio), f"small requests took {ratio:.1f}x their undisturbed time"
    assert later <= HELD_RATIO * undisturbed, (
        f"a structured request after the attack took {later:.2f} s, {later / undisturbed:.1f}x its "
        f"undisturbed {undisturbed:.2f} s"
    )
    wait_for_idle_gauges(structured_server)
