"""The grammar gate: one bounded compile per schema, verdicts remembered, abandoned compiles stopped."""

from __future__ import annotations

import asyncio

import pytest

from server.engine.grammar_gate import GrammarGate, GrammarLimits, WorkerLostError
from server.errors import GrammarTooComplexError
from tests.waiting import until


class FakeWorker:
    """A compile process whose compiles finish when the test says so."""

    def __init__(self, log: list[FakeWorker]) -> None:
        self.compiling: list[str] = []
        self.finish: dict[str, asyncio.Event] = {}
        self.lose: set[str] = set()
        self.killed = False
        log.append(self)

    async def started(self) -> None:
        assert not self.killed

    async def compile(self, schema_json: str) -> str | None:
        assert not self.killed, "a killed worker was reused"
        self.compiling.append(schema_json)
        done = self.finish.setdefault(schema_json, asyncio.Event())
        await done.wait()
        if schema_json in self.lose:
            raise WorkerLostError("gone")
        return None

    def kill(self) -> None:
        self.killed = True


class Workers:
    """Starts fake workers and releases compiles by schema, whichever worker runs them."""

    def __init__(self) -> None:
        self.started: list[FakeWorker] = []
        self.released: set[str] = set()
        self.lose: set[str] = set()

    def start(self) -> FakeWorker:
        worker = FakeWorker(self.started)
        worker.lose = self.lose
        for schema in self.released:
            worker.finish.setdefault(schema, asyncio.Event()).set()
        return worker

    def release(self, schema: str) -> None:
        self.released.add(schema)
        for worker in self.started:
            worker.finish.setdefault(schema, asyncio.Event()).set()

    def compiles(self, schema: str) -> int:
        return sum(worker.compiling.count(schema) for worker in self.started)

    def running(self) -> list[str]:
        return [
            schema
            for worker in self.started
            if not worker.killed
            for schema in worker.compiling
            if not worker.finish[schema].is_set()
        ]


def gate_with(workers: Workers, timeout_s: float = 60.0, count: int = 2) -> GrammarGate:
    return GrammarGate(workers.start, GrammarLimits(timeout_s=timeout_s, workers=count))


async def test_a_schema_is_compiled_once_and_then_passes_at_once() -> None:
    workers = Workers()
    gate = gate_with(workers)
    workers.release("A")
    await gate.check("A")
    await gate.check("A")
    assert workers.compiles("A") == 1


async def test_requests_for_one_schema_share_its_compile() -> None:
    workers = Workers()
    gate = gate_with(workers)
    first, second = asyncio.create_task(gate.check("A")), asyncio.create_task(gate.check("A"))
    await until(lambda: workers.compiles("A") == 1, "the compile started")
    workers.release("A")
    await asyncio.gather(first, second)
    assert workers.compiles("A") == 1


async def test_a_compile_past_the_deadline_is_refused_killed_and_remembered() -> None:
    workers = Workers()
    gate = gate_with(workers, timeout_s=0.01)  # "A" is never released: it would compile forever
    with pytest.raises(GrammarTooComplexError) as refused:
        await gate.check("A")
    assert refused.value.param == "response_format"
    assert refused.value.code == "response_format_too_complex"
    assert workers.started[0].killed
    with pytest.raises(GrammarTooComplexError):
        await gate.check("A")
    assert workers.compiles("A") == 1  # the verdict, not a second compile


async def test_a_lost_worker_refuses_the_schema_it_was_compiling() -> None:
    workers = Workers()
    workers.lose.add("A")
    gate = gate_with(workers)
    workers.release("A")
    with pytest.raises(GrammarTooComplexError):
        await gate.check("A")
    assert workers.started[0].killed


async def test_a_compile_whose_only_client_left_is_killed_and_not_remembered() -> None:
    workers = Workers()
    gate = gate_with(workers, count=1)
    waiting = asyncio.create_task(gate.check("big"))
    await until(lambda: workers.running() == ["big"], "the big compile running")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await until(lambda: workers.started[0].killed, "the abandoned compile's worker killed")
    # The only slot is free again: a later schema compiles on a fresh worker, and "big" is compiled anew.
    workers.release("small")
    await gate.check("small")
    workers.release("big")
    await gate.check("big")
    assert workers.compiles("big") == 2


async def test_a_compile_runs_on_while_another_client_still_waits_for_it() -> None:
    workers = Workers()
    gate = gate_with(workers)
    leaving, staying = asyncio.create_task(gate.check("A")), asyncio.create_task(gate.check("A"))
    await until(lambda: workers.running() == ["A"], "the compile running")
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    workers.release("A")
    await staying
    assert not workers.started[0].killed
    assert workers.compiles("A") == 1


async def test_a_queued_compile_whose_client_left_never_starts() -> None:
    workers = Workers()
    gate = gate_with(workers, count=1)
    running = asyncio.create_task(gate.check("first"))
    await until(lambda: workers.running() == ["first"], "the first compile running")
    queued = asyncio.create_task(gate.check("queued"))  # waits for the only slot
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    workers.release("first")
    await running
    workers.release("later")
    await gate.check("later")
    assert workers.compiles("queued") == 0


async def test_no_more_compiles_run_at_once_than_there_are_workers() -> None:
    workers = Workers()
    gate = gate_with(workers, count=2)
    tasks = [asyncio.create_task(gate.check(name)) for name in "ABC"]
    await until(lambda: len(workers.running()) == 2, "two compiles running")
    assert workers.compiles("C") == 0
    workers.release("A")
    await until(lambda: workers.compiles("C") == 1, "the third compile started once a slot freed")
    workers.release("B")
    workers.release("C")
    await asyncio.gather(*tasks)
    assert len(workers.started) == 2  # the workers were reused


async def test_a_request_arriving_after_the_last_one_left_starts_a_compile_of_its_own() -> None:
    workers = Workers()
    gate = gate_with(workers, count=2)
    leaving = asyncio.create_task(gate.check("A"))
    await until(lambda: workers.running() == ["A"], "the compile running")
    leaving.cancel()
    arriving = asyncio.create_task(gate.check("A"))  # before the cancelled compile has wound down
    with pytest.raises(asyncio.CancelledError):
        await leaving
    workers.release("A")
    await arriving
    assert workers.compiles("A") == 2


async def test_close_kills_idle_and_running_workers() -> None:
    workers = Workers()
    gate = gate_with(workers, count=2)
    gate.prestart()
    running = asyncio.create_task(gate.check("A"))
    await until(lambda: workers.running() == ["A"], "the compile running")
    gate.close()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert all(worker.killed for worker in workers.started)


def test_verdicts_are_forgotten_oldest_first() -> None:
    workers = Workers()
    gate = GrammarGate(workers.start, GrammarLimits(), remembered=2)

    async def check_all() -> None:
        for name in ["A", "B", "A", "C", "A", "B"]:
            workers.release(name)
            await gate.check(name)

    asyncio.run(check_all())
    # A stays (used again), B is forgotten when C arrives and compiles once more.
    assert (workers.compiles("A"), workers.compiles("B"), workers.compiles("C")) == (1, 2, 1)
