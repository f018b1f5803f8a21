"""A batch survives a crash: SIGKILL of the server or of its engine, on SQLite and on PostgreSQL.

Each test creates a batch of LINES short lines, waits until some are answered while the batch still
runs, kills (the whole server process tree, or only vLLM's engine core, after which the server exits with
status 3), starts a server again on the same batch store, and waits for the batch to complete: every
custom_id is answered exactly once, and no line answered before the kill ran again.

That last claim is checked against evidence that does not come from the output file: once the server is
dead, the test reads the store itself (the `batch_lines` rows in state `done`, each with the record that
will go to the output file). Every such record must reach the output file unchanged. A record holds a
line id (`batch_req_` + a random UUID) and vLLM's request id, both drawn fresh on every run, so a line
run again cannot reproduce its record by accident. And the restarted server's engine must have finished
exactly LINES minus that many requests (vLLM's `vllm:request_success_total`, read once the server is
idle): a line run again whose answer was then thrown away would show there.

Server starts are few (each takes about 40 s): the SQLite tests share one store, the engine test taking
the server the SIGKILL test restarted. Claims of a killed server lapse after `--batch-lease-seconds` (5 s
here, less than a start), so the restarted server takes them over at once. Lines are flex requests: the
flex lane lets a wave of them start at once (`--flex-batch-size` = `--batch-max-in-flight`) and a lone
one wait at most 0.5 s. Deadlines only catch hangs.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import API_KEY, MODEL, Server, _Launch
from tests.e2e.gauges import wait_for_idle_gauges
from tests.postgres_server import PostgresServer, start_server
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.fault_tolerance]
HANG_S = 240  # a deadline that only a hang reaches
LINES = 300  # enough that the batch is still running when its first lines are answered
IN_FLIGHT = 8
FLAGS = ["--no-enable-lora", "--energy-meter", "estimated", "--flex-max-wait-seconds", "0.5"]
FLAGS += ["--batch-max-in-flight", str(IN_FLIGHT), "--flex-batch-size", str(IN_FLIGHT)]
FLAGS += ["--batch-lease-seconds", "5"]
EXIT_ENGINE_DEAD = 3  # the server's status when it exits because its engine died
Answered = dict[str, dict[str, Any]]  # custom_id -> the record stored for it


class Replica:
    """A batch store and the one server running on it: started, killed, started again."""

    def __init__(
        self, factory: pytest.TempPathFactory, store_url: str, read_answered: Callable[[str], Answered]
    ):
        self._factory = factory
        self._store_url = store_url
        self.read_answered = read_answered  # what the store holds as answered, for a batch id
        self.launch: _Launch | None = None
        self.server: Server | None = None

    def running(self) -> Server:
        """The server on the store, started if none runs."""
        if self.launch is None or self.launch.process.poll() is not None:
            self.launch = _Launch(
                self._factory.mktemp("batch-crash"), [*FLAGS, "--batch-store", self._store_url]
            )
            self.server = self.launch.ready()
        assert self.server is not None
        return self.server

    def client(self) -> openai.OpenAI:
        """OpenAI's client, pointed at the running server."""
        return openai.OpenAI(
            base_url=f"{self.running().base_url}/v1", api_key=API_KEY, max_retries=0, timeout=60
        )

    def kill_server(self) -> None:
        """SIGKILL the server process; then its engine core and any other child, so none outlives it."""
        assert self.launch is not None
        process = self.launch.process
        under = psutil.Process(process.pid).children(recursive=True)
        assert any("EngineCore" in child.name() for child in under)
        # The log up to the kill: children that outlive their parent by a moment may print its loss.
        log_text = self.launch.log_path.read_text()
        assert "Traceback" not in log_text, f"the server logged a traceback:\n{log_text[-6000:]}"
        process.kill()
        assert process.wait(timeout=HANG_S) == -signal.SIGKILL  # reaped by its parent, this test
        for child in under:
            with contextlib.suppress(psutil.NoSuchProcess):  # vLLM's engine core may follow on its own
                child.kill()
        _, alive = psutil.wait_procs(under, timeout=HANG_S)
        assert not alive

    def kill_engine(self) -> None:
        """SIGKILL vLLM's engine core only: the server answers what it ran with an error, then exits 3."""
        assert self.launch is not None
        process = self.launch.process
        under = psutil.Process(process.pid).children(recursive=True)
        engine_cores = [child for child in under if "EngineCore" in child.name()]
        assert engine_cores
        for child in engine_cores:
            child.kill()
        assert process.wait(timeout=HANG_S) == EXIT_ENGINE_DEAD
        assert "the engine died" in self.launch.log_path.read_text()
        _, alive = psutil.wait_procs(under, timeout=HANG_S)
        assert not alive

    def close(self) -> None:
        """Stop the server if it runs (the module's end)."""
        if self.launch is not None and self.launch.process.poll() is None:
            self.launch.stop()


def sqlite_answered(path: Path) -> Callable[[str], Answered]:
    def read(batch_id: str) -> Answered:
        # Read-only, and only once the server is dead: the store as the kill left it.
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            found = db.execute(
                "SELECT custom_id, record FROM batch_lines WHERE batch_id = ? AND state = 'done'", (batch_id,)
            ).fetchall()
        return {custom_id: json.loads(record) for custom_id, record in found}

    return read


@pytest.fixture(scope="module")
def sqlite_replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    # A store of the module's own: the e2e servers share one cache folder, whose default store would make
    # every server of the test run a replica of these, running their lines.
    path = tmp_path_factory.mktemp("batch-crash-store") / "batches.sqlite3"
    replica = Replica(tmp_path_factory, f"sqlite:///{path}", sqlite_answered(path))
    try:
        yield replica
    finally:
        replica.close()


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    pytest.importorskip("psycopg", reason="no PostgreSQL driver: pip install 'wattserve[postgres]'")
    try:
        server = start_server()
    except RuntimeError as err:
        print(f"PostgreSQL batch crash test skipped: {err}")  # noqa: T201 - the reason, in the output
        pytest.skip(f"no PostgreSQL server: {err}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postgres_replica(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Replica]:
    import psycopg  # noqa: PLC0415 - an optional extra, checked by the postgres fixture

    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE batch_crash")
    url = postgres.url("batch_crash")

    def read(batch_id: str) -> Answered:
        with psycopg.connect(url) as db:
            found = db.execute(
                "SELECT custom_id, record FROM batch_lines WHERE batch_id = %s AND state = 'done'",
                (batch_id,),
            ).fetchall()
        return {custom_id: json.loads(record) for custom_id, record in found}

    replica = Replica(tmp_path_factory, url, read)
    try:
        yield replica
    finally:
        replica.close()


def submit(api: openai.OpenAI, name: str) -> str:
    """A batch of LINES greedy chat lines, each exactly 4 tokens long; its id."""
    lines = []
    for index in range(LINES):
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"{name}: line {index}"}],
            "max_tokens": 4,
            "temperature": 0,
            "ignore_eos": True,
        }
        lines.append(
            {"custom_id": f"{name}-{index}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        )
    content = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    uploaded = api.files.create(file=(f"{name}.jsonl", content), purpose="batch")
    batch = api.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert (batch.status, batch.request_counts.total) == ("in_progress", LINES)
    return batch.id


def wait_mid_run(api: openai.OpenAI, batch_id: str) -> None:
    """Wait until some lines are answered, none failed, and the batch still runs."""
    seen: list[Any] = []

    def some_answered() -> bool:
        seen.append(api.batches.retrieve(batch_id))
        return seen[-1].request_counts.completed > 0

    wait_until(some_answered, lambda: f"a first line of {batch_id} answered (last: {seen[-1]})", HANG_S)
    assert seen[-1].status == "in_progress"
    assert seen[-1].request_counts.failed == 0


def engine_requests_finished(server: Server) -> float:
    """vLLM's count of requests its engine finished in this server's life, over every finish reason."""
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        page = http.get("/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name == "vllm:request_success_total"
    )


def check_resumed(replica: Replica, name: str, batch_id: str, before: Answered) -> None:
    """The restarted server completes the batch: each line once, those answered before the kill untouched."""
    assert 0 < len(before) < LINES, "the kill did not land mid-run"
    assert all(record["response"]["status_code"] == 200 for record in before.values())
    server = replica.running()
    api = replica.client()
    seen: list[Any] = []

    def done() -> bool:
        seen.append(api.batches.retrieve(batch_id))
        return seen[-1].status not in ("in_progress", "finalizing")

    wait_until(done, lambda: f"batch {batch_id} completed (last: {seen[-1]})", HANG_S)
    batch = seen[-1]
    assert batch.status == "completed"
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        LINES,
        LINES,
        0,
    )
    assert batch.error_file_id is None
    rows = [json.loads(row) for row in api.files.content(batch.output_file_id).text.splitlines()]
    assert Counter(row["custom_id"] for row in rows) == Counter(f"{name}-{i}" for i in range(LINES))
    by_id = {row["custom_id"]: row for row in rows}
    for row in rows:
        assert row["response"]["status_code"] == 200, row
        assert row["response"]["body"]["usage"]["completion_tokens"] == 4
    # What was answered before the kill is what the output holds, run for run.
    for custom_id, record in before.items():
        assert by_id[custom_id] == record
    # The restarted engine ran exactly the lines not answered before the kill (those claimed and running
    # at the kill among them, since their answers were never written), each once.
    wait_for_idle_gauges(server, HANG_S)
    assert engine_requests_finished(server) == LINES - len(before)


def test_sigkill_of_the_server_loses_no_answer_and_runs_none_twice(sqlite_replica: Replica) -> None:
    api = sqlite_replica.client()
    batch_id = submit(api, "sqlite-kill")
    wait_mid_run(api, batch_id)
    sqlite_replica.kill_server()
    check_resumed(sqlite_replica, "sqlite-kill", batch_id, sqlite_replica.read_answered(batch_id))


def test_sigkill_of_the_engine_core_loses_no_answer_and_runs_none_twice(sqlite_replica: Replica) -> None:
    api = sqlite_replica.client()
    batch_id = submit(api, "sqlite-engine")
    wait_mid_run(api, batch_id)
    sqlite_replica.kill_engine()
    check_resumed(sqlite_replica, "sqlite-engine", batch_id, sqlite_replica.read_answered(batch_id))


def test_sigkill_of_the_server_on_postgresql_loses_no_answer_and_runs_none_twice(
    postgres_replica: Replica,
) -> None:
    api = postgres_replica.client()
    batch_id = submit(api, "postgres-kill")
    wait_mid_run(api, batch_id)
    postgres_replica.kill_server()
    check_resumed(postgres_replica, "postgres-kill", batch_id, postgres_replica.read_answered(batch_id))
