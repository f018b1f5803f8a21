"""Running lines: claims never shared (tasks, stores, processes), leases, and each line answered once."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from server.storage.batches import BatchStore
from tests.unit.batch_store.conftest import Backend
from tests.unit.batch_store.records import NOW, FakeClock, create, keys, outcome

ROOT = Path(__file__).resolve().parents[3]


async def everything_claimed(store: BatchStore, worker: str) -> list[tuple[str, int]]:
    taken: list[tuple[str, int]] = []
    while lines := await store.claim_lines(worker, 4):
        taken += keys(lines)
    return taken


async def test_claims_take_the_oldest_batch_first_then_by_line(store: BatchStore) -> None:
    await create(store, "batch_new", 2, created_at=NOW + 10)
    await create(store, "batch_old", 3, created_at=NOW)
    await create(store, "batch_waiting", 2, status="validating", created_at=NOW - 10)
    assert keys(await store.claim_lines("w1", 2)) == [("batch_old", 1), ("batch_old", 2)]
    assert keys(await store.claim_lines("w2", 2)) == [("batch_old", 3), ("batch_new", 1)]
    assert keys(await store.claim_lines("w1", 10)) == [("batch_new", 2)]
    assert await store.claim_lines("w3", 10) == []
    assert await store.claim_lines("w3", 0) == []
    line = (await store.claim_lines("w3", 1)) or None
    assert line is None
    await store.set_status("batch_waiting", "in_progress")
    claimed = await store.claim_lines("w3", 1)
    assert keys(claimed) == [("batch_waiting", 1)]
    assert claimed[0].body["messages"][0]["content"] == "question 1 — ü 世界"
    assert (claimed[0].custom_id, claimed[0].url) == ("request-1", "/v1/chat/completions")


async def test_concurrent_claims_from_tasks_never_share_a_line(store: BatchStore) -> None:
    await create(store, "batch_1", 60)
    await create(store, "batch_2", 40, created_at=NOW + 1)
    taken = await asyncio.gather(*(everything_claimed(store, f"w{n}") for n in range(8)))
    flat = [key for worker in taken for key in worker]
    assert len(flat) == len(set(flat)) == 100


async def test_concurrent_claims_from_two_stores_never_share_a_line(
    backend: Backend, clock: FakeClock
) -> None:
    stores = [await backend.open(clock) for _ in range(2)]
    try:
        await create(stores[0], "batch_1", 120)
        taken = await asyncio.gather(*(everything_claimed(stores[n % 2], f"w{n}") for n in range(6)))
        flat = [key for worker in taken for key in worker]
        assert sorted(flat) == [("batch_1", n) for n in range(1, 121)]
    finally:
        for store in stores:
            await store.close()


@pytest.mark.timeout(120)
async def test_two_processes_claiming_at_once_never_share_a_line(store: BatchStore, backend: Backend) -> None:
    await create(store, "batch_1", 300)
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.unit.batch_store.worker",
            "claim",
            backend.url,
            str(backend.files_dir),
            f"process-{n}",
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        for n in range(2)
    ]
    try:
        for worker in workers:  # both open and waiting, then both go at once
            assert worker.stdout is not None
            assert await worker.stdout.readline() == b"ready\n"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(b"go\n")
            await worker.stdin.drain()
        outputs = [await worker.communicate() for worker in workers]
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
    assert [worker.returncode for worker in workers] == [0, 0]
    taken = [[tuple(key) for key in json.loads(stdout)] for stdout, _ in outputs]
    assert not set(taken[0]) & set(taken[1])
    assert sorted(taken[0] + taken[1]) == [("batch_1", n) for n in range(1, 301)]


async def test_a_lapsed_lease_is_taken_over_and_a_live_one_is_not(
    store: BatchStore, clock: FakeClock
) -> None:
    await create(store, "batch_1", 2)
    assert keys(await store.claim_lines("dead", 1)) == [("batch_1", 1)]
    clock.now = NOW + 60  # exactly the lease: still live
    assert keys(await store.claim_lines("alive", 10)) == [("batch_1", 2)]
    clock.now = NOW + 60.5
    assert keys(await store.claim_lines("alive", 10)) == [("batch_1", 1)]
    # The worker that lost its claim cannot answer; the one holding it can, once.
    assert await store.finish_line("dead", "batch_1", outcome(1)) is False
    assert await store.finish_line("alive", "batch_1", outcome(1)) is True
    assert await store.finish_line("alive", "batch_1", outcome(1)) is False
    clock.now = NOW + 1000
    assert keys(await store.claim_lines("late", 10)) == [("batch_1", 2)]  # a done line is never claimed again


async def test_renewing_keeps_a_lease_live_for_the_worker_that_holds_it(
    store: BatchStore, clock: FakeClock
) -> None:
    await create(store, "batch_1", 2)
    claimed = keys(await store.claim_lines("w", 2))
    clock.now = NOW + 50
    await store.renew_claims("w", [claimed[0]])
    await store.renew_claims("someone_else", [claimed[1]])  # not theirs: nothing changes
    await store.renew_claims("w", [])
    clock.now = NOW + 100
    assert keys(await store.claim_lines("other", 10)) == [("batch_1", 2)]
    clock.now = NOW + 110.5
    assert keys(await store.claim_lines("other", 10)) == [("batch_1", 1)]


async def test_released_claims_go_back_to_pending_for_anyone(store: BatchStore) -> None:
    await create(store, "batch_1", 3)
    await store.claim_lines("leaving", 2)
    await store.claim_lines("staying", 1)
    await store.release_claims("leaving")
    assert keys(await store.claim_lines("next", 10)) == [("batch_1", 1), ("batch_1", 2)]
    assert await store.finish_line("leaving", "batch_1", outcome(1)) is False
    assert await store.finish_line("staying", "batch_1", outcome(3)) is True


async def test_counts_and_energy_totals_add_up_once_per_line(store: BatchStore) -> None:
    await create(store, "batch_1", 4)
    await store.claim_lines("w", 4)
    answers = [
        outcome(1, joules=1.25, tokens=10, co2e=0.5, avoided=0.125),
        outcome(2, failed=True, joules=None, tokens=0, co2e=None, avoided=None),
        outcome(3, joules=2.0, tokens=7, co2e=None, avoided=0.5),
        outcome(4, failed=True, joules=0.5, tokens=3, co2e=0.25, avoided=0.0625),
    ]
    for answer in answers:
        assert await store.finish_line("w", "batch_1", answer)
        assert await store.finish_line("w", "batch_1", answer) is False
    assert await store.finish_line("w", "batch_1", outcome(5)) is False  # no such line
    assert await store.finish_line("w", "batch_other", outcome(1)) is False
    got = await store.get_batch_any_owner("batch_1")
    assert got is not None
    assert (got.total, got.completed, got.failed, got.output_tokens) == (4, 2, 2, 20)
    assert got.joules == pytest.approx(3.75)
    assert got.co2e_grams == pytest.approx(0.75)
    assert got.co2e_avoided_grams == pytest.approx(0.6875)
    outcomes = await store.line_outcomes("batch_1")
    assert outcomes == [(a.line_no, a.record, a.failed) for a in answers]


async def test_racing_finishes_of_one_line_count_it_once(backend: Backend, clock: FakeClock) -> None:
    stores = [await backend.open(clock) for _ in range(2)]
    try:
        await create(stores[0], "batch_1", 1)
        await stores[0].claim_lines("w", 1)
        won = await asyncio.gather(
            *(s.finish_line("w", "batch_1", outcome(1)) for s in stores for _ in range(3))
        )
        assert sorted(won) == [False] * 5 + [True]
        got = await stores[1].get_batch_any_owner("batch_1")
        assert got is not None
        assert (got.completed, got.joules) == (1, 2.5)
    finally:
        for store in stores:
            await store.close()
