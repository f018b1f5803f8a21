"""OpenAI's Files and Batch APIs on the real server with the embedded model, driven by OpenAI's own client.

Upload a JSONL file, create a batch on it, poll it, download its output and error files: every line runs
once, through the live request path in the flex tier, with its usage and energy, and the batch adds up
its lines' energy and tokens; a line naming an unknown model goes to the error file and the batch still
completes; a cancelled batch keeps only what finished; batches and files are listed a page at a time.

It runs on the shared plain server (tests/e2e/conftest.py): batch lines are flex requests, and a lone
flex request waits for companions up to `--flex-max-wait-seconds` (30 s by default, 0.5 s there); one
line runs at a time (`--batch-max-in-flight 1`), so a cancel always lands mid-run. Each e2e server has a
batch store of its own: the servers share one cache folder, whose default store would make every server
of the test run a replica of this one. The model has random weights: every line is greedy and runs to
`max_tokens` (`ignore_eos`), so each run says the same thing. Deadlines only catch hangs.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import openai
import pytest

from tests.e2e.conftest import API_KEY, MODEL, Server
from tests.e2e.gauges import wait_for_idle_gauges
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e
HANG_S = 180  # a deadline that only a hang reaches
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
FINISHED = ("completed", "failed", "expired", "cancelled")
TOKENS = 6  # max_tokens of every line; ignore_eos makes each answer exactly this long


@pytest.fixture(scope="module")
def api(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=HANG_S)


def chat_line(custom_id: str, text: str, model: str = MODEL) -> dict[str, Any]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": TOKENS,
        "temperature": 0,
        "ignore_eos": True,
    }
    return {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body}


def completion_line(custom_id: str, prompt: str) -> dict[str, Any]:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": TOKENS, "temperature": 0, "ignore_eos": True}
    return {"custom_id": custom_id, "method": "POST", "url": COMPLETIONS, "body": body}


def submit(api: openai.OpenAI, lines: list[dict[str, Any]], endpoint: Any = CHAT, **more: Any) -> Any:
    """Upload `lines` as a JSONL file and create a batch on it."""
    content = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    uploaded = api.files.create(file=("input.jsonl", content), purpose="batch")
    assert (uploaded.purpose, uploaded.bytes) == ("batch", len(content))
    batch = api.batches.create(input_file_id=uploaded.id, endpoint=endpoint, completion_window="24h", **more)
    assert batch.status == "in_progress", batch
    assert (batch.input_file_id, batch.request_counts.total) == (uploaded.id, len(lines))
    return batch


def finished(api: openai.OpenAI, batch_id: str) -> Any:
    """Retrieve the batch until it has finished; the batch as then stored."""
    seen: list[Any] = []

    def done() -> bool:
        seen.append(api.batches.retrieve(batch_id))
        return seen[-1].status in FINISHED

    wait_until(done, lambda: f"batch {batch_id} finished (last: {seen[-1].status})", HANG_S)
    return seen[-1]


def rows(api: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    """A batch output or error file's lines, parsed; none without a file."""
    if file_id is None:
        return []
    return [json.loads(row) for row in api.files.content(file_id).text.splitlines()]


def check_answered(row: dict[str, Any], obj: str) -> None:
    """A line answered through the live path: 200, flex, TOKENS tokens, energy from the CPU estimate."""
    response = row["response"]
    assert response["status_code"] == 200, row
    assert row["error"] is None
    body = response["body"]
    assert (body["object"], body["model"], body["service_tier"]) == (obj, MODEL, "flex")
    assert response["request_id"] == body["id"]
    assert row["id"].startswith("batch_req_")
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["completion_tokens"] == TOKENS
    assert usage["total_tokens"] == usage["prompt_tokens"] + TOKENS
    # The server meters by the CPU-time estimate (--energy-meter estimated), and says so.
    energy = usage["energy"]
    assert energy["source"] == "estimated"
    assert energy["joules"] >= 0
    assert energy["co2e_grams"] >= 0


def check_totals(batch: Any, answered: list[dict[str, Any]]) -> None:
    """The batch's energy is the sum of its answered lines' energy and output tokens."""
    energy = batch.energy  # wattserve's extension of OpenAI's batch object
    lines = [row["response"]["body"]["usage"] for row in answered]
    assert energy["source"] == "estimated"
    assert energy["output_tokens"] == sum(usage["completion_tokens"] for usage in lines)
    joules = sum(usage["energy"]["joules"] for usage in lines)
    assert energy["joules"] == pytest.approx(joules, rel=1e-6, abs=1e-9)
    assert energy["joules"] > 0
    assert energy["co2e_grams"] == pytest.approx(
        sum(usage["energy"]["co2e_grams"] for usage in lines), rel=1e-6, abs=1e-12
    )
    assert energy["joules_per_output_token"] == pytest.approx(energy["joules"] / energy["output_tokens"])


def test_a_chat_batch_answers_every_line_once_and_an_unknown_model_goes_to_the_error_file(
    api: openai.OpenAI, server: Server
) -> None:
    lines = [chat_line(f"chat-{i}", f"Tell me about the number {i}.") for i in range(6)]
    lines.insert(3, chat_line("nowhere", "Hello?", model="no-such-model"))
    created = submit(api, lines, metadata={"suite": "e2e", "kind": "chat"})
    assert created.metadata == {"suite": "e2e", "kind": "chat"}
    assert created.endpoint == CHAT

    batch = finished(api, created.id)
    assert batch.status == "completed"
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        7,
        6,
        1,
    )
    assert batch.metadata == {"suite": "e2e", "kind": "chat"}
    assert batch.completed_at is not None
    answered, failed = rows(api, batch.output_file_id), rows(api, batch.error_file_id)
    # Every custom_id exactly once, across both files.
    every = Counter(row["custom_id"] for row in answered + failed)
    assert every == Counter(line["custom_id"] for line in lines)
    assert sorted(row["custom_id"] for row in answered) == [f"chat-{i}" for i in range(6)]
    for row in answered:
        check_answered(row, "chat.completion")
        assert row["response"]["body"]["choices"][0]["message"]["role"] == "assistant"
    assert len({row["id"] for row in answered + failed}) == 7
    assert len({row["response"]["request_id"] for row in answered}) == 6
    (error,) = failed
    assert (error["custom_id"], error["response"]["status_code"]) == ("nowhere", 404)
    assert error["error"]["code"] == "model_not_found"
    assert error["response"]["body"]["error"]["param"] == "model"
    check_totals(batch, answered)
    # Both files are the caller's, as batch output.
    for file_id in (batch.output_file_id, batch.error_file_id):
        assert api.files.retrieve(file_id).purpose == "batch_output"
    wait_for_idle_gauges(server, HANG_S)


def test_a_completions_batch_answers_every_line_once(api: openai.OpenAI) -> None:
    lines = [completion_line(f"text-{i}", f"Once upon a time, number {i}") for i in range(4)]
    batch = finished(api, submit(api, lines, endpoint=COMPLETIONS).id)
    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (4, 0)
    assert batch.error_file_id is None
    answered = rows(api, batch.output_file_id)
    assert sorted(row["custom_id"] for row in answered) == [f"text-{i}" for i in range(4)]
    for row in answered:
        check_answered(row, "text_completion")
        assert isinstance(row["response"]["body"]["choices"][0]["text"], str)
    check_totals(batch, answered)


def test_a_cancelled_batch_stops_and_keeps_only_the_lines_that_finished(api: openai.OpenAI) -> None:
    total = 40  # one line at a time: the batch is far from done when the first line is
    lines = [chat_line(f"line-{i}", f"Count to {i}.") for i in range(total)]
    created = submit(api, lines)
    started: list[Any] = []

    def one_done() -> bool:
        started.append(api.batches.retrieve(created.id))
        return started[-1].request_counts.completed >= 1

    wait_until(one_done, "a first line answered", HANG_S)
    assert started[-1].status == "in_progress"
    cancelling = api.batches.cancel(created.id)
    assert cancelling.status in ("cancelling", "cancelled")
    batch = finished(api, created.id)
    assert batch.status == "cancelled"
    assert batch.cancelled_at is not None
    assert 1 <= batch.request_counts.completed < total
    assert batch.request_counts.failed == 0
    assert batch.error_file_id is None  # lines that never ran are no errors
    answered = rows(api, batch.output_file_id)
    ids = [row["custom_id"] for row in answered]
    assert len(ids) == len(set(ids)) == batch.request_counts.completed
    assert set(ids) <= {line["custom_id"] for line in lines}
    for row in answered:
        check_answered(row, "chat.completion")
    check_totals(batch, answered)
    # Cancelled for good: nothing more runs, the counts stay.
    again = api.batches.retrieve(created.id)
    assert (again.status, again.request_counts) == ("cancelled", batch.request_counts)


def test_batches_and_files_are_listed_newest_first_a_page_at_a_time(api: openai.OpenAI) -> None:
    created = [submit(api, [chat_line("only", f"List {i}.")]) for i in range(3)]
    ids = [batch.id for batch in created]
    first = api.batches.list(limit=2)
    assert [batch.id for batch in first.data] == ids[::-1][:2]
    assert first.has_more
    second = api.batches.list(limit=2, after=first.data[-1].id)
    assert second.data[0].id == ids[0]
    # The SDK pages on its own (`after` = the last id): every batch once, newest first.
    every = [batch.id for batch in api.batches.list(limit=2)]
    assert len(every) == len(set(every))
    assert every[:3] == ids[::-1]

    outputs = [finished(api, batch_id).output_file_id for batch_id in ids]
    inputs = [batch.input_file_id for batch in created]
    uploaded = api.files.list(purpose="batch", limit=2)
    assert [record.id for record in uploaded.data] == inputs[::-1][:2]
    assert uploaded.has_more
    assert api.files.list(purpose="batch", limit=1, after=inputs[1]).data[0].id == inputs[0]
    written = [record.id for record in api.files.list(purpose="batch_output")]
    assert set(outputs) <= set(written)
    assert all(record.purpose in ("batch", "batch_output") for record in api.files.list())
    # A deleted input file leaves the list; its batch keeps what it ran.
    assert api.files.delete(inputs[0]).deleted
    assert inputs[0] not in {record.id for record in api.files.list(purpose="batch")}
    assert finished(api, ids[0]).request_counts.completed == 1
    with pytest.raises(openai.NotFoundError):
        api.batches.retrieve("batch_" + "0" * 32)
