"""Compile processes on the real xgrammar: they compile, report refusals, die when killed, and a deadline
past which the gate refuses kills the one compiling."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator

import pytest

from server.engine.grammar_gate import GrammarGate, GrammarLimits, WorkerLostError
from server.engine.grammar_process import CompileProcess, start_forkserver
from server.errors import GrammarTooComplexError
from tests.waiting import wait_until

xgr = pytest.importorskip("xgrammar")

SMALL = json.dumps({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]})
# Thousands of optional properties: seconds of compiling on any machine (each adds states to every mask).
SLOW = json.dumps({"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(8000)}})


@pytest.fixture(scope="module")
def tokenizer_info() -> str:
    start_forkserver()
    vocab = [chr(c) for c in range(32, 127)] + [f"tok{i}" for i in range(900)] + ["</s>"]
    return xgr.TokenizerInfo(vocab, stop_token_ids=[len(vocab) - 1]).serialize_json()


@pytest.fixture
def process(tokenizer_info: str) -> Iterator[CompileProcess]:
    worker = CompileProcess(tokenizer_info, any_whitespace=True)
    yield worker
    worker.kill()


def alive(pid: int | None) -> bool:
    assert pid is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_schema_compiles_and_a_refusal_comes_back_as_the_compilers_message(
    process: CompileProcess,
) -> None:
    await process.started()
    assert await process.compile(SMALL) is None
    message = await process.compile(json.dumps({"$ref": "#/$defs/missing"}))
    assert isinstance(message, str)
    assert message


async def test_a_process_that_died_is_reported_lost(process: CompileProcess) -> None:
    await process.started()
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    with pytest.raises(WorkerLostError):
        await process.compile(SMALL)


async def test_a_compile_past_the_deadline_is_refused_and_its_process_killed(tokenizer_info: str) -> None:
    started: list[CompileProcess] = []

    def start() -> CompileProcess:
        started.append(CompileProcess(tokenizer_info, any_whitespace=True))
        return started[-1]

    # Far under SLOW's compile time, far over SMALL's.
    gate = GrammarGate(start, GrammarLimits(timeout_s=0.5, workers=1))
    try:
        with pytest.raises(GrammarTooComplexError):
            await gate.check(SLOW)
        wait_until(lambda: not alive(started[0].pid), "the compiling process gone")
        await gate.check(SMALL)  # a fresh process takes the slot
        assert len(started) == 2
    finally:
        gate.close()
