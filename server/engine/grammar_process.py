"""A grammar-compile process for `GrammarGate`: xgrammar, as vLLM's engine runs it, but killable.

Processes come from a fork server that imported xgrammar once (seconds), so a worker killed mid-compile
is replaced in milliseconds, and no process is forked from the server's own, which runs threads. This
module imports no vLLM: the fork server preloads it, and each process runs it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from multiprocessing.connection import Connection
from typing import Any

from server.engine.grammar_gate import WorkerLostError

_CONTEXT = multiprocessing.get_context("forkserver")
COMPILE_NICENESS = 10
# Bounds the wait for a killed process to be reaped; SIGKILL ends it within milliseconds.
_REAP_TIMEOUT_S = 1.0


def _serve(conn: Connection, tokenizer_info_json: str, any_whitespace: bool) -> None:
    """The process's loop: compile each schema received, answer None or the compiler's message."""
    import xgrammar as xgr  # noqa: PLC0415 - only the compile processes need it (the fork server preloads it)

    # Below the engine's priority: a compile takes the CPU the engine leaves, rather than slowing every
    # request's tokens; under full load it runs slower and meets its deadline less often.
    os.nice(COMPILE_NICENESS)
    compiler = xgr.GrammarCompiler(
        xgr.TokenizerInfo.deserialize_json(tokenizer_info_json),
        # One thread per process: `workers` processes use at most that many cores. vLLM's engine uses 8,
        # so what compiles here within the deadline compiles there at least as fast.
        max_threads=1,
        cache_enabled=False,  # the gate remembers verdicts; a compiled grammar is not kept
    )
    # As vLLM's XgrammarBackend.compile_grammar compiles a JSON schema.
    separators = None if any_whitespace else (",", ":")
    conn.send(None)  # ready: the deadline of the first compile starts now
    while True:
        try:
            schema_json = conn.recv()
        except (EOFError, ConnectionResetError):  # the server is gone (reset: it died, our ready unread)
            return
        try:
            compiler.compile_json_schema(schema_json, any_whitespace=any_whitespace, separators=separators)
        except Exception as err:  # noqa: BLE001 - the compiler's refusal is the answer, not a failure
            conn.send(str(err))
        else:
            conn.send(None)


class CompileProcess:
    """One compile process and the pipe to it (a `CompileWorker`)."""

    def __init__(self, tokenizer_info_json: str, any_whitespace: bool) -> None:
        self._conn, child = _CONTEXT.Pipe()
        self._process = _CONTEXT.Process(
            target=_serve,
            args=(child, tokenizer_info_json, any_whitespace),
            name="wattserve-grammar-compile",
            daemon=True,
        )
        self._process.start()
        child.close()
        self._started = False

    async def started(self) -> None:
        """Return once the process has built its compiler.

        Raises:
            WorkerLostError: The process ended before it had.
        """
        if not self._started:
            await self._reply()
            self._started = True

    async def compile(self, schema_json: str) -> str | None:
        """Compile `schema_json` in the process; None, or the compiler's message when it refused it.

        Raises:
            WorkerLostError: The process ended before answering.
        """
        try:
            self._conn.send(schema_json)  # the process waits in recv(), so this does not block for long
        except OSError as err:
            raise WorkerLostError(str(err)) from err
        return await self._reply()

    async def _reply(self) -> Any:
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[None] = loop.create_future()
        fd = self._conn.fileno()
        loop.add_reader(fd, lambda: answered.done() or answered.set_result(None))
        try:
            await answered
            return self._conn.recv()
        except (EOFError, OSError) as err:
            raise WorkerLostError(str(err)) from err
        finally:
            loop.remove_reader(fd)

    @property
    def pid(self) -> int | None:
        """The process's id."""
        return self._process.pid

    def kill(self) -> None:
        """Stop the process now, compile or not."""
        self._process.kill()
        self._process.join(_REAP_TIMEOUT_S)
        self._conn.close()


def start_forkserver() -> None:
    """Start the fork server with xgrammar imported (blocking, seconds); later processes fork from it."""
    _CONTEXT.set_forkserver_preload(["xgrammar", __name__])
    # Starting (and ending) one process brings the fork server up now rather than at the first compile.
    process = _CONTEXT.Process(target=_noop, name="wattserve-grammar-warmup", daemon=True)
    process.start()
    process.join()


def _noop() -> None:
    """Nothing: the warm-up process only makes the fork server start."""
