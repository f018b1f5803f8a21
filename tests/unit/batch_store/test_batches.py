"""Batches in the batch store: records, pages, statuses, cancelling, finalizing, expiry and purges."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from server.storage.batches import BatchStore, BatchStoreError
from tests.unit.batch_store.conftest import Backend
from tests.unit.batch_store.records import NOW, FakeClock, batch, create, file_id, file_record, outcome

NO_FILES = {"output": None, "output_content": None, "error_file": None, "error_content": None}


async def run_all(store: BatchStore, batch_id: str, failed: frozenset[int] = frozenset()) -> None:
    """Claim and answer every line of the in-progress batches."""
    while lines := await store.claim_lines("runner", 100):
        for one in lines:
            assert await store.finish_line(
                "runner", one.batch_id, outcome(one.line_no, failed=one.line_no in failed)
            )


async def test_a_batch_round_trips_and_only_its_owner_sees_it(store: BatchStore) -> None:
    record, lines = batch("batch_1", 2)
    record = replace(record, errors=[{"code": "x", "message": "y", "param": None, "line": 3}])
    await store.create_batch(record, lines)
    assert await store.get_batch("alice", "batch_1") == record
    assert await store.get_batch_any_owner("batch_1") == record
    assert await store.get_batch("mallory", "batch_1") is None
    assert await store.get_batch("alice", "batch_2") is None
    assert await store.cancel_batch("mallory", "batch_1") is None
    assert (await store.get_batch("alice", "batch_1")) == record


async def test_a_batch_whose_total_or_lines_disagree_is_refused(store: BatchStore) -> None:
    record, lines = batch("batch_1", 2)
    with pytest.raises(ValueError, match="total 2 but has 1"):
        await store.create_batch(record, lines[:1])
    with pytest.raises(ValueError, match="batch_other"):
        await store.create_batch(record, [lines[0], replace(lines[1], batch_id="batch_other")])
    assert await store.get_batch_any_owner("batch_1") is None
    await store.create_batch(record, lines)
    with pytest.raises(BatchStoreError, match="taken"):
        await store.create_batch(record, lines)


async def test_list_batches_is_newest_first_and_pages_after_an_id(store: BatchStore) -> None:
    for n, created_at in ((1, NOW), (2, NOW + 1), (3, NOW + 1), (4, NOW + 2)):
        await create(store, f"batch_{n}", 1, created_at=created_at)
    await create(store, "batch_bob", 1, owner="bob", created_at=NOW + 3)

    async def page(after: str | None, limit: int) -> list[str]:
        return [b.id for b in await store.list_batches("alice", after=after, limit=limit)]

    assert await page(None, 2) == ["batch_4", "batch_3"]
    assert await page("batch_3", 2) == ["batch_2", "batch_1"]
    assert await page("batch_1", 2) == []
    assert await page("batch_bob", 2) == []
    assert [b.id for b in await store.list_batches("bob", after=None, limit=10)] == ["batch_bob"]


async def test_set_status_moves_a_batch_on_but_never_out_of_cancelling_or_finished(store: BatchStore) -> None:
    await create(store, "batch_1", status="validating")
    assert await store.set_status("batch_1", "in_progress", in_progress_at=NOW + 5) is True
    got = await store.get_batch_any_owner("batch_1")
    assert got is not None
    assert (got.status, got.in_progress_at) == ("in_progress", NOW + 5)
    await store.cancel_batch("alice", "batch_1")
    assert await store.set_status("batch_1", "in_progress", in_progress_at=NOW + 9) is False
    got = await store.get_batch_any_owner("batch_1")
    assert got is not None
    assert (got.status, got.in_progress_at) == ("cancelling", NOW + 5)
    assert await store.set_status("batch_absent", "in_progress") is False
    with pytest.raises(ValueError, match="finalize"):
        await store.set_status("batch_1", "completed")
    with pytest.raises(ValueError, match="not batch timestamps"):
        await store.set_status("batch_1", "in_progress", created_at=NOW)


async def test_a_failed_batch_never_runs_its_lines(store: BatchStore) -> None:
    await create(store, "batch_1", status="validating")
    assert await store.set_status("batch_1", "failed", failed_at=NOW + 1)
    assert await store.claim_lines("w", 10) == []
    assert await store.set_status("batch_1", "in_progress") is False
    assert await store.claim_lines("w", 10) == []
    assert await store.batches_ready_to_finalize() == []


async def test_cancel_stops_pending_lines_and_lets_claimed_ones_finish(
    store: BatchStore, clock: FakeClock
) -> None:
    await create(store, "batch_1", 4)
    claimed = await store.claim_lines("w", 2)
    clock.now = NOW + 7
    cancelling = await store.cancel_batch("alice", "batch_1")
    assert cancelling is not None
    assert (cancelling.status, cancelling.cancelling_at) == ("cancelling", NOW + 7)
    assert await store.cancel_batch("alice", "batch_1") == cancelling  # a second cancel changes nothing
    assert await store.claim_lines("w2", 10) == []
    assert await store.batches_ready_to_finalize() == []  # two lines are still being answered
    assert await store.finish_line("w", "batch_1", outcome(claimed[0].line_no))
    assert await store.batches_ready_to_finalize() == []
    assert await store.finish_line("w", "batch_1", outcome(claimed[1].line_no, failed=True))
    assert await store.batches_ready_to_finalize() == ["batch_1"]
    assert [line_no for line_no, _, _ in await store.line_outcomes("batch_1")] == [1, 2]
    assert await store.finalize("batch_1", status="completed", **NO_FILES) is False  # it is cancelling
    clock.now = NOW + 9
    assert await store.finalize("batch_1", status="cancelled", **NO_FILES) is True
    done = await store.get_batch("alice", "batch_1")
    assert done is not None
    assert (done.status, done.cancelled_at, done.finalizing_at, done.completed, done.failed) == (
        "cancelled",
        NOW + 9,
        NOW + 9,
        1,
        1,
    )
    assert await store.cancel_batch("alice", "batch_1") == done  # finished: returned unchanged


async def test_a_cancelling_batch_whose_worker_died_is_ready_once_the_lease_lapses(
    store: BatchStore, clock: FakeClock
) -> None:
    await create(store, "batch_1", 2)
    await store.claim_lines("dead", 1)
    await store.cancel_batch("alice", "batch_1")
    clock.now = NOW + 60
    assert await store.batches_ready_to_finalize() == []
    clock.now = NOW + 60.5
    assert await store.batches_ready_to_finalize() == ["batch_1"]
    # Once the batch is found ready its outcomes are read for its files: a worker only slow, not dead,
    # can no longer add one they would lack.
    assert await store.finish_line("dead", "batch_1", outcome(1)) is False
    assert await store.line_outcomes("batch_1") == []
    assert await store.finalize("batch_1", status="cancelled", **NO_FILES)
    assert await store.finish_line("dead", "batch_1", outcome(1)) is False
    got = await store.get_batch_any_owner("batch_1")
    assert got is not None
    assert (got.status, got.completed) == ("cancelled", 0)


async def test_finalize_stores_the_files_and_completes_the_batch_once(
    store: BatchStore, clock: FakeClock
) -> None:
    await create(store, "batch_1", 3)
    assert await store.batches_ready_to_finalize() == []
    with pytest.raises(ValueError, match="come together"):
        await store.finalize("batch_1", status="completed", **(NO_FILES | {"output": file_record(5, b"o")}))
    assert await store.finalize("batch_1", status="completed", **NO_FILES) is False  # lines left to run
    await run_all(store, "batch_1", failed=frozenset({2}))
    assert await store.batches_ready_to_finalize() == ["batch_1"]
    outcomes = await store.line_outcomes("batch_1")
    assert [(line_no, failed) for line_no, _, failed in outcomes] == [(1, False), (2, True), (3, False)]
    assert outcomes[1][1] == outcome(2, failed=True).record
    output, errors = (
        file_record(5, b"out\n", purpose="batch_output"),
        file_record(6, b"err\n", purpose="batch_output"),
    )
    clock.now = NOW + 30
    files = {"output": output, "output_content": b"out\n", "error_file": errors, "error_content": b"err\n"}
    assert await store.finalize("batch_1", status="completed", **files) is True
    done = await store.get_batch("alice", "batch_1")
    assert done is not None
    assert (done.status, done.completed_at, done.finalizing_at) == ("completed", NOW + 30, NOW + 30)
    assert (done.output_file_id, done.error_file_id, done.completed, done.failed) == (
        output.id,
        errors.id,
        2,
        1,
    )
    assert await store.file_content("alice", output.id) == b"out\n"
    assert await store.file_content("alice", errors.id) == b"err\n"
    assert await store.batches_ready_to_finalize() == []
    again = {
        "output": file_record(7, b"x"),
        "output_content": b"x",
        "error_file": None,
        "error_content": None,
    }
    assert await store.finalize("batch_1", status="completed", **again) is False
    assert await store.get_file("alice", file_id(7)) is None


async def test_an_empty_batch_is_ready_at_once_and_finalizes_without_files(store: BatchStore) -> None:
    await create(store, "batch_1", 0)
    assert await store.batches_ready_to_finalize() == ["batch_1"]
    assert await store.finalize("batch_1", status="completed", **NO_FILES)
    got = await store.get_batch_any_owner("batch_1")
    assert got is not None
    assert (got.status, got.output_file_id, got.error_file_id, got.total) == ("completed", None, None, 0)


async def test_two_stores_racing_to_finalize_one_wins_and_the_loser_leaves_no_file(
    backend: Backend, clock: FakeClock
) -> None:
    stores = [await backend.open(clock) for _ in range(2)]
    try:
        await create(stores[0], "batch_1", 2)
        await run_all(stores[0], "batch_1")
        ready = await asyncio.gather(*(s.batches_ready_to_finalize() for s in stores))
        assert ready == [["batch_1"], ["batch_1"]]
        won = await asyncio.gather(
            *(
                s.finalize(
                    "batch_1",
                    status="completed",
                    output=file_record(10 + n, b"output", purpose="batch_output"),
                    output_content=b"output",
                    error_file=None,
                    error_content=None,
                )
                for n, s in enumerate(stores)
            )
        )
        assert sorted(won) == [False, True]
        winner = file_id(10 + won.index(True))
        loser = file_id(10 + won.index(False))
        got = await stores[0].get_batch_any_owner("batch_1")
        assert got is not None
        assert got.output_file_id == winner
        assert await stores[1].file_content("alice", winner) == b"output"
        assert await stores[1].get_file("alice", loser) is None
        if backend.name == "sqlite":
            assert sorted(p.name for p in backend.files_dir.iterdir()) == [winner]
    finally:
        for store in stores:
            await store.close()


async def test_expire_due_expires_only_unfinished_batches_past_their_deadline(
    store: BatchStore, clock: FakeClock
) -> None:
    await create(store, "batch_late", 3, expires_at=NOW + 100)
    await create(store, "batch_waiting", 1, status="validating", expires_at=NOW + 100)
    await create(store, "batch_in_time", 1, expires_at=NOW + 1000)
    await create(store, "batch_cancelling", 1, expires_at=NOW + 100)
    await store.cancel_batch("alice", "batch_cancelling")
    first = await store.claim_lines("w", 2)
    assert [(one.batch_id, one.line_no) for one in first] == [("batch_late", 1), ("batch_late", 2)]
    assert await store.finish_line("w", "batch_late", outcome(1))
    assert await store.expire_due(NOW + 100) == []
    assert await store.expire_due(NOW + 100.5) == ["batch_late", "batch_waiting"]
    assert await store.expire_due(NOW + 200) == []
    late = await store.get_batch_any_owner("batch_late")
    assert late is not None
    assert (late.status, late.expired_at, late.completed) == ("expired", NOW + 100.5, 1)
    # Its unanswered lines are cancelled, the one still being answered too: its answer comes too late.
    assert await store.finish_line("w", "batch_late", outcome(2)) is False
    assert [one.batch_id for one in await store.claim_lines("w", 10)] == ["batch_in_time"]
    assert await store.batches_ready_to_finalize() == ["batch_late", "batch_waiting", "batch_cancelling"]
    assert [line_no for line_no, _, _ in await store.line_outcomes("batch_late")] == [1]
    output = file_record(9, b"1 line", purpose="batch_output")
    files = {"output": output, "output_content": b"1 line", "error_file": None, "error_content": None}
    assert await store.finalize("batch_late", status="expired", **files)
    assert await store.finalize("batch_late", status="expired", **NO_FILES) is False
    expired = await store.get_batch_any_owner("batch_late")
    assert expired is not None
    assert (expired.status, expired.output_file_id, expired.finalizing_at) == ("expired", output.id, NOW)


async def test_purge_deletes_expired_files_and_old_finished_batches(
    store: BatchStore, clock: FakeClock
) -> None:
    for n, expires_at in ((1, NOW + 10), (2, NOW + 20), (3, None)):
        await store.put_file(file_record(n, b"f", expires_at=expires_at), b"f")
    await create(store, "batch_done", 1)
    await run_all(store, "batch_done")
    clock.now = NOW + 5
    assert await store.finalize("batch_done", status="completed", **NO_FILES)
    await create(store, "batch_running", 1, created_at=NOW - 10 * 86_400.0, expires_at=NOW + 86_400.0)
    await create(store, "batch_failed", 0, status="validating")
    assert await store.set_status("batch_failed", "failed", failed_at=NOW + 50)

    assert await store.purge_expired(NOW + 15) == 1
    assert [f.id for f in await store.list_files("alice", purpose=None, after=None, limit=10)] == [
        file_id(3),
        file_id(2),
    ]
    # A day after finishing: the completed batch goes, the one failed later stays, the old running one stays.
    assert await store.purge_expired(NOW + 5 + 86_400.0 + 1) == 2
    assert await store.get_batch_any_owner("batch_done") is None
    assert await store.line_outcomes("batch_done") == []
    assert await store.get_batch_any_owner("batch_failed") is not None
    assert await store.get_batch_any_owner("batch_running") is not None
    assert await store.purge_expired(NOW + 50 + 86_400.0 + 1) == 1
    assert [b.id for b in await store.list_batches("alice", after=None, limit=10)] == ["batch_running"]
