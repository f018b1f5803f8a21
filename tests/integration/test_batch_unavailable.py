"""A batch line the server cannot serve (503: its engine died, it is shutting down) is not the line's outcome:
it is left to a server that can serve, which answers it; no line is failed for it, none is answered twice."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai

from server.compose import create_app
from server.energy.meters.base import NullEnergyMeter
from server.errors import EngineUnavailableError
from server.settings import ServerSettings
from tests.integration.fake_engine import FakeEngine
from tests.waiting import until, until_checked

MODEL = FakeEngine.served_model_name
CHAT_URL = "/v1/chat/completions"
LINES = 12


class DyingEngine(FakeEngine):
    """Answers `answers` requests, then refuses every other one as a dead engine does."""

    def __init__(self, answers: int) -> None:
        super().__init__(script="Hello.")
        self.answers_left = answers
        self.refused = 0

    async def generate(self, *args: Any, **kwargs: Any) -> Any:
        if self.answers_left == 0:
            self.refused += 1
            raise EngineUnavailableError("The engine has stopped; the server cannot serve.")
        self.answers_left -= 1
        async for step in super().generate(*args, **kwargs):
            yield step


@asynccontextmanager
async def client(engine: FakeEngine, cache_dir: Path) -> AsyncIterator[openai.AsyncOpenAI]:
    # Batch lines are flex requests: a short lane bound keeps a lone line from waiting for companions.
    settings = ServerSettings(api_key="k", cache_dir=cache_dir, flex_max_wait_seconds=0.2)
    app = create_app(settings, lambda: engine, meter=NullEnergyMeter())
    async with app.router.lifespan_context(app):
        transport = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test/v1")
        async with transport:
            yield openai.AsyncOpenAI(
                api_key="k", base_url="http://test/v1", http_client=transport, max_retries=0
            )


async def test_lines_refused_by_a_dead_engine_are_answered_by_the_next_server(tmp_path: Path) -> None:
    lines = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": CHAT_URL,
            "body": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
        }
        for i in range(LINES)
    ]
    content = b"".join(json.dumps(entry).encode() + b"\n" for entry in lines)
    dying = DyingEngine(answers=3)
    async with client(dying, tmp_path) as api:
        uploaded = await api.files.create(file=("input.jsonl", content), purpose="batch")
        created = await api.batches.create(
            input_file_id=uploaded.id, endpoint=CHAT_URL, completion_window="24h"
        )
        await until(lambda: dying.refused >= 1, "a line refused by the dead engine", timeout_s=30.0)
        refused = await api.batches.retrieve(created.id)
        # The refusal failed no line; leaving the server (as it does when its engine died) gives the
        # lines it holds back to the store.
        assert (refused.status, refused.request_counts.failed) == ("in_progress", 0)

    healthy = FakeEngine(script="Hello.")
    async with client(healthy, tmp_path) as api:

        async def finished() -> bool:
            return (await api.batches.retrieve(created.id)).status != "in_progress"

        await until_checked(finished, "the batch finishes on the next server", timeout_s=30.0)
        batch = await api.batches.retrieve(created.id)
        output = [
            json.loads(row) for row in (await api.files.content(batch.output_file_id)).text.splitlines()
        ]
    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (LINES, 0)
    assert batch.error_file_id is None
    assert Counter(row["custom_id"] for row in output) == Counter(f"req-{i}" for i in range(LINES))
    assert all(row["response"]["status_code"] == 200 for row in output)
    # The dead engine answered 3 lines, each written; the next server ran every other line, once.
    assert dying.answers_left == 0
    assert len(healthy.specs) == LINES - 3
