"""Compile each new `response_format` schema once, bounded, before vLLM's engine is handed it.

Why this exists, from vLLM 0.32's structured-output code:

- `StructuredOutputManager.grammar_init` (`vllm/v1/structured_output/__init__.py:180`) submits every
  compile to one `ThreadPoolExecutor` of `(cpu_count + 1) // 2` workers (line 88; one on two cores); no
  setting sizes it (upstream vllm#49461 proposes one).
- The xgrammar backend compiles JSON schemas with no deadline (`backend_xgrammar.py:112`,
  `compile_json_schema`); only regexes get one (`utils.py:62`, `compile_regex_with_timeout`,
  `VLLM_REGEX_COMPILATION_TIMEOUT_S`). Upstream vllm#54003, with open fixes vllm#54090 and vllm#45172.
- An abort never cancels a request's compile future, queued or running, and xgrammar cannot stop a
  compile once started (vllm#14151, xgrammar#298).

So one client's large schemas, sent and abandoned, occupy the engine's compile pool for as long as they
take, and every later structured request waits behind them. The gate runs first, in wattserve's
process: a schema seen for the first time is compiled in a separate process, at most `workers` at once,
within `timeout_s`. A schema over the deadline is refused (400) and remembered as such; one that
compiles in time is remembered too, and goes to the engine, whose compile then takes about as long
(bounded by the same deadline) or hits xgrammar's own cache. A compile whose every waiting client has
left is stopped: still queued, it never starts; running, its process is killed. Only processes can be
stopped mid-compile, hence processes rather than threads.

Invariants: at most `workers` compiles run at once; one compile per schema at a time, however many
requests wait on it (they share it); a compile that runs on has at least one client waiting on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from server.errors import GrammarTooComplexError

logger = logging.getLogger(__name__)

# Verdicts remembered (32-byte digests and a flag each): far more distinct schemas than a deployment uses.
REMEMBERED_SCHEMAS = 4096


class WorkerLostError(Exception):
    """The compile process ended mid-compile (killed by the OS, out of memory, crashed)."""


class CompileWorker(Protocol):
    """One compile process: compiles one schema at a time, and can be killed mid-compile."""

    async def started(self) -> None:
        """Return once the process can compile (at once after the first time).

        Raises:
            WorkerLostError: The process ended before it could.
        """
        ...

    async def compile(self, schema_json: str) -> str | None:
        """Compile a schema; return None, or the compiler's message when it refused the schema.

        Raises:
            WorkerLostError: The process ended before answering.
        """
        ...

    def kill(self) -> None:
        """Stop the process now, compile or not."""
        ...


@dataclass(frozen=True)
class GrammarLimits:
    """How compiles are bounded: the deadline of one compile and how many run at once."""

    timeout_s: float = 5.0
    workers: int = 2


@dataclass
class _Compile:
    task: asyncio.Task[bool]
    waiters: int = 0


class GrammarGate:
    """Decides, once per schema, whether it compiles within the deadline; refuses those that do not."""

    def __init__(
        self,
        start_worker: Callable[[], CompileWorker],
        limits: GrammarLimits,
        remembered: int = REMEMBERED_SCHEMAS,
    ) -> None:
        self._start_worker = start_worker
        self._limits = limits
        self._remembered = remembered
        self._slots = asyncio.Semaphore(limits.workers)
        self._idle: list[CompileWorker] = []
        self._verdicts: OrderedDict[bytes, bool] = OrderedDict()  # digest -> compiled in time
        self._running: dict[bytes, _Compile] = {}

    def prestart(self) -> None:
        """Start the workers now, so the first structured request does not pay for it."""
        while len(self._idle) < self._limits.workers:
            self._idle.append(self._start_worker())

    async def check(self, schema_json: str) -> None:
        """Return once `schema_json` is known to compile in time (compiling it if new).

        Cancelling the call (the client went away) withdraws this request; the compile stops once no
        request waits on it.

        Raises:
            GrammarTooComplexError: It did not compile within the deadline (400, `param: response_format`).
        """
        key = hashlib.sha256(schema_json.encode()).digest()
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = await self._wait_for(key, schema_json)
        else:
            self._verdicts.move_to_end(key)
        if not verdict:
            raise GrammarTooComplexError(
                "The response_format schema does not compile into a grammar within "
                f"{self._limits.timeout_s:g} s (see --max-grammar-compile-seconds); simplify it (fewer "
                "enum values, optional properties or anyOf branches).",
                param="response_format",
            )

    def close(self) -> None:
        """Stop every compile and every worker."""
        for running in list(self._running.values()):
            running.task.cancel()
        for worker in self._idle:
            worker.kill()
        self._idle.clear()

    async def _wait_for(self, key: bytes, schema_json: str) -> bool:
        running = self._running.get(key)
        if running is None:
            running = _Compile(asyncio.create_task(self._compile(key, schema_json)))
            self._running[key] = running
            running.task.add_done_callback(lambda _: self._forget(key, running))
        running.waiters += 1
        try:
            return await asyncio.shield(running.task)
        finally:
            running.waiters -= 1
            if running.waiters == 0 and not running.task.done():
                # Nobody waits for it any more: stop it, queued or running. A request for the same schema
                # arriving meanwhile starts a compile of its own rather than joining a cancelled one.
                self._forget(key, running)
                running.task.cancel()

    def _forget(self, key: bytes, running: _Compile) -> None:
        if self._running.get(key) is running:
            del self._running[key]

    async def _compile(self, key: bytes, schema_json: str) -> bool:
        async with self._slots:  # cancelled while queued here, the compile never starts
            worker = self._idle.pop() if self._idle else self._start_worker()
            try:
                await worker.started()  # a fresh process's start is not the schema's cost
                async with asyncio.timeout(self._limits.timeout_s):
                    await worker.compile(schema_json)
            except TimeoutError:
                worker.kill()
                verdict = False
            except WorkerLostError:
                worker.kill()
                logger.warning("a grammar-compile process ended mid-compile; refusing that schema")
                verdict = False
            except BaseException:
                worker.kill()  # cancelled: a compile cannot be interrupted otherwise
                raise
            else:
                # A schema the compiler refused is passed on too: vLLM's own validation words that 400.
                self._idle.append(worker)
                verdict = True
        self._remember(key, verdict)
        return verdict

    def _remember(self, key: bytes, verdict: bool) -> None:
        self._verdicts[key] = verdict
        self._verdicts.move_to_end(key)
        while len(self._verdicts) > self._remembered:
            self._verdicts.popitem(last=False)
