"""Replace, unload and reload adapters under streaming load: no failure, no wrong adapter."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ADMIN_KEY, API_KEY, MODEL, Server
from tests.e2e.test_adapters import PROMPT, text_of
from tests.waiting import until

pytestmark = pytest.mark.e2e
# Rounds of changes, each waiting for this many finished streams before the next, so the amount of
# traffic every change meets is fixed by construction, whatever the machine's speed.
ROUNDS = 30
STREAMS_PER_ROUND = 4
CLIENTS = 4
TOKENS = 12
CHURNED = ["churn-a", "churn-b"]
HANG_S = 120  # a deadline that only a hang reaches


@dataclass
class Outcome:
    model: str
    sent: float
    done: float
    status: int
    version: str | None = None
    text: str = ""
    finished: bool = False


async def stream_one(http: httpx.AsyncClient, model: str) -> Outcome:
    body = {"model": model, "prompt": PROMPT, "max_tokens": TOKENS, "temperature": 0, "stream": True}
    outcome = Outcome(model, time.monotonic(), 0.0, 0)
    async with http.stream("POST", "/v1/completions", json=body) as response:
        outcome.status = response.status_code
        outcome.version = response.headers.get("x-adapter-version")
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                outcome.finished = True
            elif line.startswith("data: {"):
                chunk = json.loads(line.removeprefix("data: "))
                for choice in chunk.get("choices", []):
                    outcome.text += choice["text"]
    outcome.done = time.monotonic()
    return outcome


async def traffic(outcomes: list[Outcome], count: int) -> None:
    """Return once `count` more streams have finished."""
    target = len(outcomes) + count
    await until(lambda: len(outcomes) >= target, f"{count} more streams finished", HANG_S)


async def churn(
    admin: httpx.AsyncClient, weights: dict[str, Path], outcomes: list[Outcome], done: asyncio.Event
) -> tuple[dict, list]:
    """Replace each churned adapter with the next weights; every third round unload and reload it."""
    version_weights: dict[str, str] = {}
    unload_windows: list[tuple[str, float, float]] = []
    cycle = itertools.cycle(sorted(weights))
    for round_index in range(ROUNDS):
        for name in CHURNED:
            key = next(cycle)
            if round_index % 3 == 2:
                started = time.monotonic()
                assert (await admin.delete(f"/v1/adapters/{name}")).status_code == 200
                response = await admin.post("/v1/adapters", json={"name": name, "path": str(weights[key])})
                unload_windows.append((name, started, time.monotonic()))
            else:
                response = await admin.post("/v1/adapters", json={"name": name, "path": str(weights[key])})
            assert response.status_code == 200, response.text
            version_weights[f"{name}@{response.json()['version']}"] = key
        await traffic(outcomes, STREAMS_PER_ROUND)
    done.set()
    return version_weights, unload_windows


async def load(server: Server, outcomes: list[Outcome], done: asyncio.Event) -> None:
    models = itertools.cycle([MODEL, "demo-alpha", *CHURNED])
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=60) as http:

        async def client() -> None:
            while not done.is_set():
                outcomes.append(await stream_one(http, next(models)))

        await asyncio.gather(*(client() for _ in range(CLIENTS)))


@pytest.fixture
def churn_names(lora_server: Server, versions: dict[str, Path]):  # noqa: ANN201
    """Unload every adapter this test loads, so later tests on the shared server find free slots."""
    names = [*CHURNED, *(f"ref-{name}" for name in versions)]
    yield names
    with lora_server.http() as http:
        for name in names:
            response = http.delete(f"/v1/adapters/{name}", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            assert response.status_code in (200, 404), response.text


def test_churn_under_streaming_load(
    lora_server: Server, versions: dict[str, Path], churn_names: list[str]
) -> None:
    with lora_server.http() as http:
        for name, path in versions.items():
            assert (
                http.post(
                    "/v1/adapters",
                    json={"name": f"ref-{name}", "path": str(path)},
                    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                ).status_code
                == 200
            )
        reference = {
            key: text_of(
                http.post(
                    "/v1/completions",
                    json={"model": f"ref-{key}", "prompt": PROMPT, "max_tokens": TOKENS, "temperature": 0},
                )
            )
            for key in versions
        }
        for model in (MODEL, "demo-alpha"):
            reference[model] = text_of(
                http.post(
                    "/v1/completions",
                    json={"model": model, "prompt": PROMPT, "max_tokens": TOKENS, "temperature": 0},
                )
            )
    # Each weight version (and the base) answers differently, so a wrong adapter cannot go unnoticed.
    assert len({reference[key] for key in (*versions, MODEL)}) == len(versions) + 1

    async def run() -> tuple[dict, list, list[Outcome]]:
        async with httpx.AsyncClient(
            base_url=lora_server.base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120
        ) as admin:
            for name in CHURNED:
                assert (
                    await admin.post("/v1/adapters", json={"name": name, "path": str(versions["v1"])})
                ).status_code == 200
            outcomes: list[Outcome] = []
            done = asyncio.Event()
            (version_weights, windows), _ = await asyncio.gather(
                churn(admin, versions, outcomes, done), load(lora_server, outcomes, done)
            )
            first = {f"{name}@v1": "v1" for name in CHURNED}
            return {**first, **version_weights}, windows, outcomes

    version_weights, windows, outcomes = asyncio.run(run())
    assert len(outcomes) >= ROUNDS * STREAMS_PER_ROUND  # by construction: every round waited for them
    assert len(version_weights) == len(CHURNED) * (ROUNDS + 1)
    assert [o for o in outcomes if o.status >= 500] == []
    not_found = [o for o in outcomes if o.status == 404]
    # A 404 is right only for a churned adapter, while it was unloaded.
    for outcome in not_found:
        assert outcome.model in CHURNED
        assert any(n == outcome.model and s <= outcome.done and outcome.sent <= e for n, s, e in windows), (
            outcome
        )
    served = [o for o in outcomes if o.status == 200]
    assert all(o.finished for o in served), [o for o in served if not o.finished][:3]
    wrong = []
    for outcome in served:
        if outcome.model in CHURNED:
            expected = reference[version_weights[outcome.version]]
        else:
            assert outcome.version is None if outcome.model == MODEL else outcome.version == "demo-alpha@v1"
            expected = reference[outcome.model]
        if outcome.text != expected:
            wrong.append(outcome)
    assert wrong == []
