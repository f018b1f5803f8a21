"""The response store: round trips, owners, bounds by count, bytes and age, durability, crash safety."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.storage import response_store
from server.storage.response_store import (
    ResponseStore,
    ResponseStoreError,
    StoredResponse,
    StoredResponseTooLargeError,
    StoreLimits,
    StoreSchemaTooNewError,
)

ROOT = Path(__file__).resolve().parents[2]
ROOMY = StoreLimits(max_responses=1000, max_bytes=10_000_000, ttl_s=3600.0)
ERROR = {"code": "server_error", "message": "The server restarted before this response finished."}


class FakeClock:
    """Unix seconds that move only when a test moves them; records the thread each reading is taken on."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.threads: set[str] = set()

    def __call__(self) -> float:
        self.threads.add(threading.current_thread().name)
        return self.now


def record(
    n: int, created_at: float = 1_000_000.0, owner: str = "", status: str = "completed", text: str = "hi"
) -> StoredResponse:
    response_id = f"resp_{n}"
    body: dict[str, Any] = {"id": response_id, "object": "response", "status": status, "output_text": text}
    history = [{"role": "user", "content": f"question {n}"}, {"role": "assistant", "content": text}]
    return StoredResponse(response_id, owner, created_at, status, body, history)


def size_of(stored: StoredResponse) -> int:
    """The bytes the store counts for one record: its body's and history's compact JSON, UTF-8 encoded."""
    return sum(
        len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
        for value in (stored.body, stored.history)
    )


@contextlib.asynccontextmanager
async def opened(
    path: Path, limits: StoreLimits = ROOMY, clock: FakeClock | None = None
) -> AsyncIterator[ResponseStore]:
    store = await ResponseStore.open(path, limits, clock=clock or FakeClock())
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "responses.sqlite3"


async def ids_present(store: ResponseStore, ids: range, owner: str = "") -> list[int]:
    return [n for n in ids if await store.get(f"resp_{n}", owner) is not None]


async def test_put_then_get_gives_the_record_back(path: Path) -> None:
    stored = record(1, text="héllo, 世界 🙂")
    async with opened(path) as store:
        await store.put(stored)
        assert await store.get("resp_1", "") == stored
        assert await store.get("resp_2", "") is None
        assert await store.stats() == (1, size_of(stored))


async def test_text_utf8_cannot_encode_round_trips(path: Path) -> None:
    stored = record(1, text="lone \ud800 surrogate")
    async with opened(path) as store:
        await store.put(stored)
        assert await store.get("resp_1", "") == stored


async def test_another_owner_can_neither_read_nor_delete(path: Path) -> None:
    async with opened(path) as store:
        await store.put(record(1, owner="alice"))
        assert await store.get("resp_1", "mallory") is None
        assert await store.get("resp_1", "") is None
        assert await store.delete("resp_1", "mallory") is False
        assert await store.get("resp_1", "alice") is not None
        assert await store.delete("resp_1", "alice") is True
        assert await store.get("resp_1", "alice") is None
        assert await store.delete("resp_1", "alice") is False
        assert await store.stats() == (0, 0)


async def test_a_rewrite_by_id_keeps_one_row_with_the_new_size_and_its_place(path: Path) -> None:
    limits = StoreLimits(max_responses=2, max_bytes=10_000_000, ttl_s=3600.0)
    async with opened(path, limits) as store:
        await store.put(record(1, status="queued", text=""))
        await store.put(record(2))
        finished = record(1, status="completed", text="a much longer answer than before")
        await store.put(finished)
        assert await store.stats() == (2, size_of(finished) + size_of(record(2)))
        assert await store.get("resp_1", "") == finished
        # Same created_at for all: first stored goes first, and the rewrite did not move resp_1 back.
        await store.put(record(3))
        assert await ids_present(store, range(1, 4)) == [2, 3]


async def test_count_bound_evicts_the_oldest_by_created_at_never_the_new_one(path: Path) -> None:
    limits = StoreLimits(max_responses=3, max_bytes=10_000_000, ttl_s=3600.0)
    async with opened(path, limits) as store:
        for n, created_at in ((1, 1_000_010.0), (2, 1_000_020.0), (3, 1_000_030.0)):
            await store.put(record(n, created_at=created_at))
        await store.put(record(4, created_at=1_000_040.0))
        assert await ids_present(store, range(1, 6)) == [2, 3, 4]
        # Written last but created first: the oldest of the others goes instead.
        await store.put(record(5, created_at=1_000_000.0))
        assert await ids_present(store, range(1, 6)) == [3, 4, 5]
        assert (await store.stats())[0] == 3


async def test_bytes_bound_evicts_the_oldest_until_the_new_one_fits(path: Path) -> None:
    small = [record(n, created_at=1_000_000.0 + n, text="x" * 100) for n in range(1, 5)]
    large = record(5, created_at=1_000_010.0, text="y" * 250)
    limits = StoreLimits(max_responses=100, max_bytes=sum(map(size_of, small)), ttl_s=3600.0)
    async with opened(path, limits) as store:
        for stored in small:
            await store.put(stored)
        await store.put(large)
        # The large one's 150 extra characters count twice (body and history): two small ones make room.
        assert await ids_present(store, range(1, 6)) == [3, 4, 5]
        count, size_bytes = await store.stats()
        assert (count, size_bytes) == (3, size_of(small[2]) + size_of(small[3]) + size_of(large))
        assert size_bytes <= limits.max_bytes


async def test_a_record_over_max_bytes_alone_is_refused_and_changes_nothing(path: Path) -> None:
    kept = record(1)
    limits = StoreLimits(max_responses=100, max_bytes=size_of(kept) + 10, ttl_s=3600.0)
    async with opened(path, limits) as store:
        await store.put(kept)
        with pytest.raises(StoredResponseTooLargeError, match="resp_2"):
            await store.put(record(2, text="z" * 100))
        assert await store.get("resp_1", "") == kept
        assert await store.stats() == (1, size_of(kept))


async def test_an_expired_response_is_never_returned_and_is_deleted_when_read(path: Path) -> None:
    clock = FakeClock()
    limits = StoreLimits(max_responses=100, max_bytes=10_000_000, ttl_s=60.0)
    async with opened(path, limits, clock) as store:
        await store.put(record(1, created_at=clock.now, owner="alice"))
        clock.now += 60.0
        assert await store.get("resp_1", "alice") is not None
        clock.now += 0.5
        assert await store.get("resp_1", "mallory") is None
        assert await store.stats() == (0, 0)
        await store.put(record(2, created_at=clock.now - 61.0, owner="alice"))
        assert await store.delete("resp_2", "alice") is False
        assert await store.stats() == (0, 0)


async def test_purge_expired_deletes_and_counts_only_the_expired(path: Path) -> None:
    clock = FakeClock()
    limits = StoreLimits(max_responses=100, max_bytes=10_000_000, ttl_s=60.0)
    async with opened(path, limits, clock) as store:
        for n in range(5):
            await store.put(record(n, created_at=clock.now - 30.0 * n))
        assert await store.purge_expired() == 2  # 90 and 120 seconds old; 60 is not older than the TTL
        assert await ids_present(store, range(5)) == [0, 1, 2]
        assert await store.purge_expired() == 0


async def test_responses_survive_close_and_reopen(path: Path) -> None:
    async with opened(path) as store:
        for n in range(3):
            await store.put(record(n, owner="alice"))
        await store.delete("resp_1", "alice")
        before = await store.stats()
    async with opened(path) as store:
        assert await store.stats() == before
        assert await store.get("resp_0", "alice") == record(0, owner="alice")
        assert await store.get("resp_1", "alice") is None


async def test_a_put_failing_inside_its_transaction_leaves_the_previous_state(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued = record(1, status="queued", text="")
    async with opened(path) as store:
        await store.put(queued)
        await store.put(record(2))
        before = await store.stats()

        def crash(*_: object, **__: object) -> int:
            raise RuntimeError("killed between the insert and the eviction")

        monkeypatch.setattr(response_store._Tables, "evict", crash)
        with pytest.raises(RuntimeError, match="killed"):
            await store.put(record(1, text="the rewrite that never committed"))
        with pytest.raises(RuntimeError, match="killed"):
            await store.put(record(3))
        assert await store.stats() == before
        assert await store.get("resp_1", "") == queued
        assert await store.get("resp_3", "") is None
        monkeypatch.undo()
        await store.put(record(3))  # the connection is usable: no transaction was left open
        assert (await store.stats())[0] == 3


WRITER = """
import asyncio, sys
from pathlib import Path
from server.storage.response_store import ResponseStore, StoredResponse, StoreLimits

async def main() -> None:
    limits = StoreLimits(max_responses=int(sys.argv[2]), max_bytes=10**9, ttl_s=10**9)
    store = await ResponseStore.open(Path(sys.argv[1]), limits)
    n = 0
    while True:
        body = {"id": f"resp_{n}", "output_text": "x" * 4000}
        await store.put(StoredResponse(f"resp_{n}", "", float(n), "completed", body, [body]))
        print(n, flush=True)
        n += 1

asyncio.run(main())
"""


@pytest.mark.timeout(120)
async def test_a_writer_killed_mid_stream_keeps_every_acknowledged_put(path: Path) -> None:
    max_responses, acknowledged = 20, 60
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, str(path), str(max_responses), cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert writer.stdout is not None
    last = -1
    try:
        while last < acknowledged:
            line = await writer.stdout.readline()
            assert line, f"the writer exited with {await writer.wait()} after {last + 1} puts"
            last = int(line)
    finally:
        writer.kill()  # SIGKILL: no handler, no cleanup, mid-put or between two
        await writer.wait()
    # The writer ran ahead of the lines read so far: its last whole line is its last acknowledged put.
    unread = await writer.stdout.read()
    unread_lines = unread[: unread.rfind(b"\n") + 1].split()
    last = int(unread_lines[-1]) if unread_lines else last
    with contextlib.closing(sqlite3.connect(path)) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    async with opened(path, StoreLimits(max_responses, 10**9, 10**9)) as store:
        # One more put may have committed unacknowledged, evicting the oldest acknowledged one.
        newest_acknowledged = range(last - max_responses + 2, last + 1)
        assert await ids_present(store, newest_acknowledged) == list(newest_acknowledged)
        assert (await store.stats())[0] == max_responses
        assert (await store.get(f"resp_{last}", "")) is not None


async def test_fail_unfinished_marks_only_queued_and_in_progress(path: Path) -> None:
    statuses = ("queued", "in_progress", "completed", "incomplete", "failed", "cancelled")
    async with opened(path) as store:
        for n, status in enumerate(statuses):
            await store.put(record(n, status=status))
    async with opened(path) as store:
        assert await store.fail_unfinished(ERROR) == 2
        for n, status in enumerate(statuses):
            stored = await store.get(f"resp_{n}", "")
            assert stored is not None
            if status in ("queued", "in_progress"):
                assert (stored.status, stored.body["status"], stored.body["error"]) == (
                    "failed",
                    "failed",
                    ERROR,
                )
                assert stored.history == record(n).history
            else:
                assert stored == record(n, status=status)
        _, size_bytes = await store.stats()
        assert size_bytes > sum(size_of(record(n, status=status)) for n, status in enumerate(statuses))
        assert await store.fail_unfinished(ERROR) == 0


async def test_a_file_from_a_newer_schema_is_refused(path: Path) -> None:
    async with opened(path) as store:
        await store.put(record(1))
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.execute(f"PRAGMA user_version = {response_store.SCHEMA_VERSION + 1}")
    with pytest.raises(StoreSchemaTooNewError, match="newer wattserve"):
        await ResponseStore.open(path, ROOMY)


@pytest.fixture
def not_a_database(path: Path) -> Path:
    path.parent.mkdir()
    path.write_bytes(b"not a database, just some bytes" * 100)
    return path


async def test_a_file_that_is_not_a_database_is_refused(not_a_database: Path) -> None:
    with pytest.raises(ResponseStoreError, match="cannot open"):
        await ResponseStore.open(not_a_database, ROOMY)


async def test_the_file_is_in_wal_mode_and_every_call_runs_off_the_event_loop(path: Path) -> None:
    clock = FakeClock()
    async with opened(path, clock=clock) as store:
        await store.put(record(1))
        await store.get("resp_1", "")
        await store.purge_expired()
        with contextlib.closing(sqlite3.connect(path)) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert clock.threads
    assert all(name.startswith("wattserve-response-store") for name in clock.threads)


async def test_a_closed_store_says_so(path: Path) -> None:
    store = await ResponseStore.open(path, ROOMY)
    await store.close()
    await store.close()
    with pytest.raises(ResponseStoreError, match="closed"):
        await store.get("resp_1", "")


@pytest.mark.parametrize(
    ("max_responses", "max_bytes", "ttl_s"), [(0, 1, 1.0), (1, 0, 1.0), (1, 1, 0.0), (1, 1, float("nan"))]
)
def test_limits_must_be_positive(max_responses: int, max_bytes: int, ttl_s: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        StoreLimits(max_responses, max_bytes, ttl_s)
