"""Files in the batch store: round trips, owners, pages, deletes, the quota, ids that are not ids."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.storage.batches import BatchLimits, BatchStore, BatchStoreError, StorageQuotaError
from tests.unit.batch_store.conftest import Backend
from tests.unit.batch_store.records import NOW, FakeClock, file_id, file_record

CONTENT = '{"custom_id": "a", "body": {"text": "héllo 世界 🙂"}}\n'.encode() + bytes(range(256))


def quota(max_file_bytes: int, max_total_bytes: int) -> BatchLimits:
    return BatchLimits(max_file_bytes, max_total_bytes, file_ttl_s=60.0, lease_s=60.0)


async def put(store: BatchStore, n: int, content: bytes = b"x", **fields: object) -> None:
    await store.put_file(file_record(n, content, **fields), content)  # type: ignore[arg-type]


async def test_a_file_round_trips_with_its_record_and_bytes(store: BatchStore) -> None:
    record = file_record(1, CONTENT, expires_at=NOW + 3600.0)
    await store.put_file(record, CONTENT)
    assert await store.get_file("alice", record.id) == record
    assert await store.file_content("alice", record.id) == CONTENT
    assert await store.get_file("alice", file_id(2)) is None
    assert await store.file_content("alice", file_id(2)) is None


async def test_an_empty_file_round_trips(store: BatchStore) -> None:
    await put(store, 1, b"")
    assert await store.file_content("alice", file_id(1)) == b""


async def test_another_owner_can_neither_see_read_list_nor_delete(store: BatchStore) -> None:
    await put(store, 1, b"secret")
    assert await store.get_file("mallory", file_id(1)) is None
    assert await store.file_content("mallory", file_id(1)) is None
    assert await store.list_files("mallory", purpose=None, after=None, limit=10) == []
    assert await store.delete_file("mallory", file_id(1)) is False
    assert await store.file_content("alice", file_id(1)) == b"secret"


async def test_list_is_newest_first_and_pages_after_an_id(store: BatchStore) -> None:
    # Two share a created_at: the one stored later is the newer.
    for n, created_at in ((1, NOW), (2, NOW + 1), (3, NOW + 1), (4, NOW + 2), (5, NOW + 3)):
        await put(store, n, created_at=created_at)
    await put(store, 6, created_at=NOW + 4, purpose="batch_output")
    await put(store, 7, created_at=NOW + 5, owner="bob")

    async def page(after: str | None, limit: int, purpose: str | None = None) -> list[str]:
        return [f.id for f in await store.list_files("alice", purpose=purpose, after=after, limit=limit)]

    assert await page(None, 3) == [file_id(6), file_id(5), file_id(4)]
    assert await page(file_id(4), 3) == [file_id(3), file_id(2), file_id(1)]
    assert await page(file_id(1), 3) == []
    assert await page(None, 100, "batch") == [file_id(n) for n in (5, 4, 3, 2, 1)]
    assert await page(file_id(3), 1, "batch") == [file_id(2)]
    assert await page(None, 100, "batch_output") == [file_id(6)]
    assert await page(None, 0) == []
    # An `after` that is not one of the owner's files gives no page rather than starting over.
    assert await page(file_id(7), 10) == []
    assert await page(file_id(99), 10) == []


async def test_delete_removes_the_file_once(store: BatchStore, backend: Backend) -> None:
    await put(store, 1, CONTENT)
    await put(store, 2, CONTENT)
    assert await store.delete_file("alice", file_id(1)) is True
    assert await store.delete_file("alice", file_id(1)) is False
    assert await store.get_file("alice", file_id(1)) is None
    assert await store.file_content("alice", file_id(1)) is None
    assert [f.id for f in await store.list_files("alice", purpose=None, after=None, limit=10)] == [file_id(2)]
    if backend.name == "sqlite":
        assert sorted(p.name for p in backend.files_dir.iterdir()) == [file_id(2)]


async def test_an_expired_file_is_gone_to_its_owner(store: BatchStore, clock: FakeClock) -> None:
    await put(store, 1, expires_at=NOW + 60.0)
    clock.now = NOW + 60.0
    assert await store.get_file("alice", file_id(1)) is not None
    clock.now = NOW + 60.5
    assert await store.get_file("alice", file_id(1)) is None
    assert await store.file_content("alice", file_id(1)) is None
    assert await store.list_files("alice", purpose=None, after=None, limit=10) == []
    assert await store.delete_file("alice", file_id(1)) is False


async def test_a_file_over_max_file_bytes_is_refused(backend: Backend, clock: FakeClock) -> None:
    store = await backend.open(clock, quota(max_file_bytes=10, max_total_bytes=100))
    try:
        await put(store, 1, b"x" * 10)
        with pytest.raises(StorageQuotaError, match="largest file"):
            await put(store, 2, b"x" * 11)
        assert await store.get_file("alice", file_id(2)) is None
    finally:
        await store.close()


async def test_the_quota_counts_every_owners_files_and_frees_on_delete(
    backend: Backend, clock: FakeClock
) -> None:
    store = await backend.open(clock, quota(max_file_bytes=100, max_total_bytes=100))
    try:
        await put(store, 1, b"a" * 60, owner="alice")
        await put(store, 2, b"b" * 40, owner="bob")  # exactly full
        with pytest.raises(StorageQuotaError, match="100 bytes of files"):
            await put(store, 3, b"c", owner="carol")
        assert await store.get_file("carol", file_id(3)) is None
        if backend.name == "sqlite":
            assert sorted(p.name for p in backend.files_dir.iterdir()) == [file_id(1), file_id(2)]
        assert await store.delete_file("alice", file_id(1))
        await put(store, 3, b"c" * 60, owner="carol")
    finally:
        await store.close()


async def test_uploads_racing_for_the_last_room_never_pass_the_quota(
    backend: Backend, clock: FakeClock
) -> None:
    tight = quota(max_file_bytes=100, max_total_bytes=250)
    stores = [await backend.open(clock, tight) for _ in range(2)]
    try:
        results = await asyncio.gather(
            *(put(stores[n % 2], n, b"z" * 100) for n in range(1, 7)), return_exceptions=True
        )
        assert sum(result is None for result in results) == 2
        assert all(isinstance(result, StorageQuotaError) for result in results if result is not None)
        stored = await stores[0].list_files("alice", purpose=None, after=None, limit=10)
        assert sum(f.bytes for f in stored) == 200
    finally:
        for store in stores:
            await store.close()


@pytest.mark.parametrize(
    "bad_id",
    [
        "../../etc/passwd",
        "file-../../../../tmp/x",
        f"file-{'0' * 31}/",
        f"/{file_id(1)}",
        f"file-{'A' * 32}",
        f"file-{'0' * 33}",
        f"{file_id(1)}\n",
        "file-",
        "",
        ".",
    ],
)
async def test_an_id_that_is_not_a_file_id_never_touches_a_path(
    store: BatchStore, backend: Backend, tmp_path: Path, bad_id: str
) -> None:
    record = file_record(1, b"payload")
    forged = type(record)(bad_id, "alice", "batch", "x.jsonl", 7, NOW, None)
    with pytest.raises(ValueError, match="not a file id"):
        await store.put_file(forged, b"payload")
    assert await store.get_file("alice", bad_id) is None
    assert await store.file_content("alice", bad_id) is None
    assert await store.delete_file("alice", bad_id) is False
    assert await store.list_files("alice", purpose=None, after=None, limit=10) == []
    assert not (tmp_path.parent / "x").exists()
    if backend.files_dir.exists():
        assert list(backend.files_dir.iterdir()) == []


async def test_a_record_whose_size_is_not_its_contents_is_refused(store: BatchStore) -> None:
    with pytest.raises(ValueError, match="says 3 bytes"):
        await store.put_file(file_record(1, b"abc"), b"abcd")
    assert await store.get_file("alice", file_id(1)) is None


async def test_a_taken_file_id_is_refused_and_keeps_the_first_file(store: BatchStore) -> None:
    await put(store, 1, b"first")
    with pytest.raises(BatchStoreError, match="taken"):
        await put(store, 1, b"second")
    assert await store.file_content("alice", file_id(1)) == b"first"
