"""The Files and Batch APIs in the in-process app, driven by OpenAI's client: upload, create, run through
the request path in the flex tier, poll, download; validation, limits, cancel, pagination."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from server.compose import create_app
from server.energy.meters.base import NullEnergyMeter
from server.settings import ServerSettings
from tests.integration.fake_engine import FakeEngine
from tests.waiting import until_checked

MODEL = FakeEngine.served_model_name
CHAT_URL = "/v1/chat/completions"


def line(custom_id: str, **body: Any) -> dict[str, Any]:
    request = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, **body}
    return {"custom_id": custom_id, "method": "POST", "url": CHAT_URL, "body": request}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(entry).encode() + b"\n" for entry in lines)


@asynccontextmanager
async def client(engine: FakeEngine, cache_dir: Path, **more: object) -> AsyncIterator[openai.AsyncOpenAI]:
    # Batch lines are flex requests: a short lane bound keeps a lone line from waiting for companions.
    settings = ServerSettings(api_key="k", cache_dir=cache_dir, flex_max_wait_seconds=0.2, **more)
    app = create_app(settings, lambda: engine, meter=NullEnergyMeter())
    async with app.router.lifespan_context(app):
        transport = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test/v1")
        async with transport:
            yield openai.AsyncOpenAI(
                api_key="k", base_url="http://test/v1", http_client=transport, max_retries=0
            )


async def finished(api: openai.AsyncOpenAI, batch_id: str) -> Any:
    async def done() -> bool:
        batch = await api.batches.retrieve(batch_id)
        return batch.status in ("completed", "failed", "expired", "cancelled")

    await until_checked(done, f"batch {batch_id} finishes", timeout_s=30.0)
    return await api.batches.retrieve(batch_id)


async def submit(api: openai.AsyncOpenAI, lines: list[dict[str, Any]]) -> Any:
    uploaded = await api.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch")
    return await api.batches.create(input_file_id=uploaded.id, endpoint=CHAT_URL, completion_window="24h")


async def test_a_batch_runs_every_line_once_in_the_flex_tier_and_errors_go_to_the_error_file(
    tmp_path: Path,
) -> None:
    engine = FakeEngine(script="Hello.")
    lines = [line(f"req-{i}") for i in range(12)] + [line("unknown-model", model="no-such-adapter")]
    async with client(engine, tmp_path) as api:
        created = await submit(api, lines)
        assert (created.status, created.request_counts.total) == ("in_progress", 13)
        batch = await finished(api, created.id)
        assert batch.status == "completed"
        assert (batch.request_counts.completed, batch.request_counts.failed) == (12, 1)
        output = [
            json.loads(row) for row in (await api.files.content(batch.output_file_id)).text.splitlines()
        ]
        errors = [json.loads(row) for row in (await api.files.content(batch.error_file_id)).text.splitlines()]
        metrics = (
            await api.with_options(base_url="http://test/").get("metrics", cast_to=httpx.Response)
        ).text
    for sample in (
        'wattserve_batches_finished_total{status="completed"} 1.0',
        'wattserve_batch_lines_total{outcome="answered"} 12.0',
        'wattserve_batch_lines_total{outcome="failed"} 1.0',
        "wattserve_batch_lines_in_flight 0.0",
        "wattserve_responses_awaiting_client 0.0",
    ):
        assert sample in metrics
    assert sorted(row["custom_id"] for row in output) == sorted(f"req-{i}" for i in range(12))
    for row in output:
        answer = row["response"]
        assert answer["status_code"] == 200
        assert answer["body"]["choices"][0]["message"]["content"] == "Hello."
        assert answer["body"]["service_tier"] == "flex"
        assert answer["request_id"] == answer["body"]["id"]
    (error,) = errors
    assert (error["custom_id"], error["response"]["status_code"]) == ("unknown-model", 404)
    assert error["error"]["code"] == "model_not_found"
    assert len(engine.specs) == 12  # each answered line reached the engine once; the unknown model never


async def test_bad_lines_fail_the_batch_with_their_line_numbers_and_nothing_runs(tmp_path: Path) -> None:
    engine = FakeEngine(script="x")
    bad = [
        line("ok"),
        {"custom_id": "wrong-url", "method": "POST", "url": "/v1/completions", "body": {}},
        line("ok"),  # a duplicate custom_id
        line("streams", stream=True),
        line("bad-field", temperature=9),
    ]
    raw = jsonl(bad) + b"{not json\n"
    async with client(engine, tmp_path) as api:
        uploaded = await api.files.create(file=("input.jsonl", raw), purpose="batch")
        batch = await api.batches.create(
            input_file_id=uploaded.id, endpoint=CHAT_URL, completion_window="24h"
        )
    assert batch.status == "failed"
    found = {(error.line, error.code) for error in batch.errors.data}
    assert found == {
        (2, "invalid_url"),
        (3, "duplicate_custom_id"),
        (4, "invalid_request"),
        (5, "invalid_request"),
        (6, "invalid_json_line"),
    }
    assert engine.specs == []


async def test_limits_and_unknown_ids_are_refused_with_openai_errors(tmp_path: Path) -> None:
    async with client(FakeEngine(script="x"), tmp_path, max_batch_file_bytes=2048, max_batch_lines=3) as api:
        with pytest.raises(openai.APIStatusError) as too_big:
            await api.files.create(file=("big.jsonl", b"x" * 4096), purpose="batch")
        assert too_big.value.status_code == 413
        uploaded = await api.files.create(
            file=("four.jsonl", jsonl([line(f"r{i}") for i in range(4)])), purpose="batch"
        )
        with pytest.raises(openai.BadRequestError) as too_many:
            await api.batches.create(input_file_id=uploaded.id, endpoint=CHAT_URL, completion_window="24h")
        assert too_many.value.body["param"] == "input_file_id"
        with pytest.raises(openai.NotFoundError):
            await api.files.retrieve("../../etc/passwd")
        with pytest.raises(openai.NotFoundError):
            await api.batches.create(
                input_file_id="file-" + "0" * 32, endpoint=CHAT_URL, completion_window="24h"
            )
        with pytest.raises(openai.BadRequestError):
            await api.files.create(file=("x.jsonl", b"{}"), purpose="fine-tune")


async def test_a_cancelled_batch_runs_no_more_lines_and_keeps_what_finished(tmp_path: Path) -> None:
    engine = FakeEngine(step_delay_s=0.2)
    async with client(engine, tmp_path, batch_max_in_flight=1) as api:
        created = await submit(api, [line(f"req-{i}") for i in range(6)])

        async def one_done() -> bool:
            return (await api.batches.retrieve(created.id)).request_counts.completed >= 1

        await until_checked(one_done, "a first line finishes", timeout_s=30.0)
        cancelling = await api.batches.cancel(created.id)
        assert cancelling.status in ("cancelling", "cancelled")
        batch = await finished(api, created.id)
        output = (await api.files.content(batch.output_file_id)).text.splitlines()
    assert batch.status == "cancelled"
    assert 1 <= batch.request_counts.completed < 6
    assert len(output) == batch.request_counts.completed
    assert len(engine.specs) == batch.request_counts.completed


async def test_files_and_batches_are_listed_newest_first_a_page_at_a_time(tmp_path: Path) -> None:
    async with client(FakeEngine(script="x"), tmp_path) as api:
        ids = [(await submit(api, [line("a")])).id for _ in range(3)]
        first = await api.batches.list(limit=2)
        assert [batch.id for batch in first.data] == ids[::-1][:2]
        assert first.has_more
        rest = await api.batches.list(limit=2, after=first.data[-1].id)
        assert [batch.id for batch in rest.data] == ids[:1]
        assert not rest.has_more
        files = await api.files.list(purpose="batch")
        assert len(files.data) == 3
        await api.files.delete(files.data[0].id)
        assert len((await api.files.list()).data) == 2


class SeatCountingEngine(FakeEngine):
    """Counts the requests in the engine by vLLM priority: 0 live (default tier), 1 flex (batch lines)."""

    def __init__(self, step_delay_s: float) -> None:
        super().__init__(step_delay_s)
        self.active = {0: 0, 1: 0}
        self.peak_flex = 0
        self.peak_flex_beside_live = 0

    async def generate(self, prompt: Any, spec: Any, request_id: str, **more: Any) -> Any:
        priority = more.get("priority", 0)
        self.active[priority] += 1
        self.peak_flex = max(self.peak_flex, self.active[1])
        if self.active[0]:
            self.peak_flex_beside_live = max(self.peak_flex_beside_live, self.active[1])
        try:
            async for step in super().generate(prompt, spec, request_id, **more):
                yield step
        finally:
            self.active[priority] -= 1


async def test_batch_lines_keep_to_a_few_seats_while_live_requests_run(tmp_path: Path) -> None:
    engine = SeatCountingEngine(step_delay_s=0.05)
    settings = {"batch_max_in_flight": 6, "batch_max_in_flight_beside_live": 2}
    async with client(engine, tmp_path, **settings) as api:
        live = asyncio.create_task(
            api.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=60
            )
        )

        async def live_running() -> bool:
            return engine.active[0] == 1

        # The first request imports vLLM's output parsers, which holds the loop for seconds.
        await until_checked(live_running, "the live request reaches the engine", timeout_s=60.0)
        created = await submit(api, [line(f"req-{i}", max_tokens=10) for i in range(40)])
        await live
        batch = await finished(api, created.id)
    assert batch.request_counts.completed == 40
    assert 1 <= engine.peak_flex_beside_live <= 2
    # Once live traffic is gone the cap lifts: the lines left start up to --batch-max-in-flight at once.
    assert engine.peak_flex > 2
