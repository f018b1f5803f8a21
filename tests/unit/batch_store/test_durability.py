"""What survives: a close and reopen, a process killed mid-transaction; schemas, URLs, closed stores."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from server.storage.batches import (
    BatchLimits,
    BatchSchemaTooNewError,
    BatchStore,
    BatchStoreError,
    open_batch_store,
)
from server.storage.batches.opener import sqlite_path
from server.storage.batches.sqlite_schema import SCHEMA_VERSION
from tests.unit.batch_store.conftest import Backend
from tests.unit.batch_store.records import LIMITS, FakeClock, create, file_id, file_record, keys, outcome

ROOT = Path(__file__).resolve().parents[3]
POLL_S = 0.05  # how often a test looks again at state another process changes
CONTENT = b'{"custom_id": "a"}\n' * 100


async def test_everything_survives_close_and_reopen(backend: Backend, clock: FakeClock) -> None:
    store = await backend.open(clock)
    await store.put_file(file_record(1, CONTENT), CONTENT)
    record = await create(store, "batch_1", 3)
    await store.claim_lines("w", 2)
    assert await store.finish_line("w", "batch_1", outcome(1))
    await store.close()

    store = await backend.open(clock)
    try:
        assert await store.file_content("alice", file_id(1)) == CONTENT
        got = await store.get_batch("alice", "batch_1")
        assert got is not None
        assert (got.completed, got.joules, got.metadata) == (1, 2.5, record.metadata)
        assert keys(await store.claim_lines("other", 10)) == [("batch_1", 3)]  # line 2 is still w's
        assert await store.finish_line("w", "batch_1", outcome(2))
        assert [n for n, _, _ in await store.line_outcomes("batch_1")] == [1, 2]
    finally:
        await store.close()


async def lines_of(process: asyncio.subprocess.Process) -> list[str]:
    """The lines the process writes until it says `inside`, then it is killed (SIGKILL: no cleanup)."""
    assert process.stdout is not None
    said: list[str] = []
    try:
        while not said or said[-1] != "inside":
            line = await process.stdout.readline()
            assert line, f"the worker exited with {await process.wait()} after {said}"
            said.append(line.decode().strip())
    finally:
        process.kill()
        await process.wait()
    return said


async def worker(mode: str, backend: Backend, name: str = "") -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.unit.batch_store.worker", mode, backend.url, str(backend.files_dir),
        name, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip


@pytest.mark.timeout(120)
async def test_a_worker_killed_inside_finish_line_leaves_the_line_unanswered_and_uncounted(
    store: BatchStore, backend: Backend, clock: FakeClock
) -> None:
    await create(store, "batch_1", 3)
    said = await lines_of(await worker("finish", backend, "doomed"))
    assert said == ["finished 1", "inside"]
    got = await store.get_batch_any_owner("batch_1")
    assert got is not None
    assert (got.completed, got.joules, got.output_tokens) == (1, 2.5, 10)
    assert [n for n, _, _ in await store.line_outcomes("batch_1")] == [1]
    if backend.name == "sqlite":
        with contextlib.closing(sqlite3.connect(backend.url.removeprefix("sqlite://"))) as raw:
            assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # The dead worker's claim lapses and line 2 is answered by another, once. (PostgreSQL frees the row
    # lock when it notices the client gone: claims skip locked rows meanwhile, so poll.)
    clock.now = time.time() + 2 * 3600
    taken: list[tuple[str, int]] = []
    while len(taken) < 2:
        taken += keys(await store.claim_lines("rescuer", 10))
        if len(taken) < 2:
            await asyncio.sleep(POLL_S)  # polling the store for the dead writer's lines, not waiting for time
    assert sorted(taken) == [("batch_1", 2), ("batch_1", 3)]
    for _, line_no in taken:
        assert await store.finish_line("rescuer", "batch_1", outcome(line_no))
    assert await store.finish_line("doomed", "batch_1", outcome(2)) is False
    got = await store.get_batch_any_owner("batch_1")
    assert got is not None
    assert (got.completed, got.joules, got.output_tokens) == (3, 7.5, 30)
    assert [n for n, _, _ in await store.line_outcomes("batch_1")] == [1, 2, 3]


@pytest.mark.timeout(120)
async def test_sqlite_an_upload_killed_before_its_row_is_invisible_and_swept_later(
    tmp_path: Path, clock: FakeClock
) -> None:
    # SQLite only: PostgreSQL writes a content and its row in one transaction.
    backend = Backend("sqlite", f"sqlite://{tmp_path / 'batches.sqlite3'}", tmp_path / "files")
    store = await backend.open(clock)
    try:
        assert await lines_of(await worker("upload", backend)) == ["inside"]
        assert await store.get_file("alice", file_id(1)) is None
        assert await store.list_files("alice", purpose=None, after=None, limit=10) == []
        assert [p.name for p in backend.files_dir.iterdir()] == [file_id(1)]
        assert await store.purge_expired(time.time()) == 0
        assert [p.name for p in backend.files_dir.iterdir()] == [file_id(1)]  # could be an upload under way
        await store.purge_expired(time.time() + 3601)
        assert list(backend.files_dir.iterdir()) == []
        await store.put_file(file_record(1, b"again"), b"again")
        assert await store.file_content("alice", file_id(1)) == b"again"
    finally:
        await store.close()


async def test_a_store_written_by_a_newer_schema_is_refused(backend: Backend, clock: FakeClock) -> None:
    store = await backend.open(clock)
    await store.close()
    if backend.name == "sqlite":
        with contextlib.closing(sqlite3.connect(backend.url.removeprefix("sqlite://"))) as raw:
            raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    else:
        import psycopg  # noqa: PLC0415

        with psycopg.connect(backend.url, autocommit=True) as raw:
            raw.execute("UPDATE wattserve_schema SET version = version + 1 WHERE component = 'batches'")
    with pytest.raises(BatchSchemaTooNewError, match="newer wattserve"):
        await backend.open(clock)


async def test_a_store_of_the_previous_schema_opens_with_no_emissions_avoided(
    backend: Backend, clock: FakeClock
) -> None:
    store = await backend.open(clock)
    await create(store, "batch_1", 2)
    await store.claim_lines("w", 2)
    assert await store.finish_line("w", "batch_1", outcome(1, avoided=0.25))
    await store.close()
    # Taken back to what the previous wattserve left: no co2e_avoided_grams column, the version before.
    if backend.name == "sqlite":
        path = backend.url.removeprefix("sqlite://")
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as raw:
            raw.execute("ALTER TABLE batches DROP COLUMN co2e_avoided_grams")
            raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
    else:
        import psycopg  # noqa: PLC0415

        with psycopg.connect(backend.url, autocommit=True) as raw:
            raw.execute("ALTER TABLE batches DROP COLUMN co2e_avoided_grams")
            raw.execute("UPDATE wattserve_schema SET version = version - 1 WHERE component = 'batches'")
    store = await backend.open(clock)
    try:
        got = await store.get_batch_any_owner("batch_1")
        assert got is not None
        assert (got.completed, got.joules, got.co2e_grams, got.co2e_avoided_grams) == (1, 2.5, 0.5, 0.0)
        assert await store.finish_line("w", "batch_1", outcome(2, avoided=0.25))
        got = await store.get_batch_any_owner("batch_1")
        assert got is not None
        assert (got.completed, got.co2e_avoided_grams) == (2, 0.25)
    finally:
        await store.close()


async def test_reopening_does_not_migrate_again(backend: Backend, clock: FakeClock) -> None:
    for _ in range(2):
        store = await backend.open(clock)
        await create(store, f"batch_{time.monotonic_ns()}", 1)
        await store.close()


async def test_a_closed_store_says_so(backend: Backend, clock: FakeClock) -> None:
    store = await backend.open(clock)
    await store.close()
    await store.close()
    with pytest.raises(BatchStoreError, match="closed"):
        await store.get_batch_any_owner("batch_1")


async def test_sqlite_is_in_wal_mode_and_every_call_runs_off_the_event_loop(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "batches.sqlite3"
    store = await open_batch_store(f"sqlite://{path}", tmp_path / "files", LIMITS, clock=clock)
    try:
        await store.put_file(file_record(1, b"x"), b"x")
        await create(store, "batch_1", 2)
        await store.claim_lines("w", 2)
        await store.get_file("alice", file_id(1))
        with contextlib.closing(sqlite3.connect(path)) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        await store.close()
    assert clock.threads
    assert all(name.startswith("wattserve-batch-store") for name in clock.threads)


async def test_sqlite_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "batches.sqlite3"
    path.write_bytes(b"not a database, just some bytes" * 100)
    with pytest.raises(BatchStoreError, match="cannot open"):
        await open_batch_store(f"sqlite://{path}", tmp_path / "files", LIMITS)


@pytest.mark.parametrize("url", ["mysql://db/batches", "batches.sqlite3", "sqlite://", "sqlite:///"])
async def test_a_url_of_no_known_kind_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(BatchStoreError, match="sqlite:///path/to"):
        await open_batch_store(url, tmp_path, LIMITS)


@pytest.mark.timeout(25)  # one failed connection, not the pool's 30 s of retries
async def test_postgres_unreachable_is_refused_with_the_reason(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql://postgres@/batches?host={tmp_path}&port=1"
    with pytest.raises(BatchStoreError, match="cannot open the PostgreSQL batch store.*No such file"):
        await open_batch_store(url, tmp_path, LIMITS)


@pytest.mark.parametrize(
    ("max_file_bytes", "max_total_bytes", "file_ttl_s", "lease_s"),
    [(0, 1, 1.0, 1.0), (1, 0, 1.0, 1.0), (1, 1, 0.0, 1.0), (1, 1, 1.0, 0.0), (1, 1, 1.0, float("inf"))],
)
def test_limits_must_be_positive(
    max_file_bytes: int, max_total_bytes: int, file_ttl_s: float, lease_s: float
) -> None:
    with pytest.raises(ValueError, match="positive"):
        BatchLimits(max_file_bytes, max_total_bytes, file_ttl_s, lease_s)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/lib/b.sqlite3", "/var/lib/b.sqlite3"),
        ("sqlite:////var/lib/b.sqlite3", "/var/lib/b.sqlite3"),
        ("sqlite://state/b.sqlite3", "state/b.sqlite3"),
    ],
)
def test_a_sqlite_url_names_its_file(url: str, path: str) -> None:
    assert sqlite_path(url) == Path(path)
