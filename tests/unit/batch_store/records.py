"""Records and a clock for the batch store tests."""

from __future__ import annotations

import threading
from typing import Any

from server.storage.batches import BatchLimits, BatchLine, BatchRecord, BatchStore, FileRecord, LineOutcome

NOW = 1_700_000_000.0
LIMITS = BatchLimits(max_file_bytes=1_000_000, max_total_bytes=10_000_000, file_ttl_s=86_400.0, lease_s=60.0)


class FakeClock:
    """Unix seconds that move only when a test moves them; records the thread each reading is taken on."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now
        self.threads: set[str] = set()

    def __call__(self) -> float:
        self.threads.add(threading.current_thread().name)
        return self.now


def file_id(n: int) -> str:
    return f"file-{n:032x}"


def file_record(
    n: int,
    content: bytes = b"",
    *,
    owner: str = "alice",
    purpose: str = "batch",
    created_at: float = NOW,
    expires_at: float | None = None,
) -> FileRecord:
    return FileRecord(file_id(n), owner, purpose, f"input-{n}.jsonl", len(content), created_at, expires_at)


def line(batch_id: str, line_no: int) -> BatchLine:
    body = {"model": "m", "messages": [{"role": "user", "content": f"question {line_no} — ü 世界"}]}
    return BatchLine(batch_id, line_no, f"request-{line_no}", "/v1/chat/completions", body)


def batch(
    batch_id: str,
    lines: int = 3,
    *,
    owner: str = "alice",
    status: str = "in_progress",
    created_at: float = NOW,
    expires_at: float = NOW + 86_400.0,
) -> tuple[BatchRecord, list[BatchLine]]:
    record = BatchRecord(
        id=batch_id,
        owner=owner,
        endpoint="/v1/chat/completions",
        input_file_id=file_id(0),
        completion_window="24h",
        status=status,
        created_at=created_at,
        expires_at=expires_at,
        in_progress_at=created_at if status == "in_progress" else None,
        total=lines,
        metadata={"project": "nightly"},
    )
    return record, [line(batch_id, n) for n in range(1, lines + 1)]


async def create(store: BatchStore, batch_id: str, lines: int = 3, **fields: Any) -> BatchRecord:
    record, batch_lines = batch(batch_id, lines, **fields)
    await store.create_batch(record, batch_lines)
    return record


def outcome(
    line_no: int,
    *,
    failed: bool = False,
    joules: float | None = 2.5,
    tokens: int = 10,
    co2e: float | None = 0.5,
    avoided: float | None = None,
) -> LineOutcome:
    custom_id = f"request-{line_no}"
    if failed:
        record: dict[str, Any] = {
            "id": f"batch_req_{line_no}",
            "custom_id": custom_id,
            "response": None,
            "error": {"code": "server_error", "message": "boom"},
        }
    else:
        body = {"id": f"chatcmpl-{line_no}", "choices": [{"message": {"content": "ok"}}]}
        record = {
            "id": f"batch_req_{line_no}",
            "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": f"req_{line_no}", "body": body},
            "error": None,
        }
    return LineOutcome(line_no, custom_id, record, failed, joules, tokens, co2e, co2e_avoided_grams=avoided)


def keys(lines: list[BatchLine]) -> list[tuple[str, int]]:
    return [(one.batch_id, one.line_no) for one in lines]
