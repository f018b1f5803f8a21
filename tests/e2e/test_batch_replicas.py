"""Two replicas behind a real load balancer share one PostgreSQL batch store, and one of them dies.

The module starts one PostgreSQL, two wattserve replicas (each with a cache folder of its own, so only
the database is shared) and an HAProxy in front of them (round robin, health checks on `GET /health`, a
refused connection retried on the other replica: see tests/haproxy_server.py). Everything the client
does goes through the balancer with OpenAI's own client: the upload may land on one replica, the
batch's creation on the other, each poll on either.

1. A batch is answered once per line, by both replicas. The proof that both worked does not come from
   the output file: each replica's own `/metrics`, scraped directly, counts the lines it answered
   (`wattserve_batch_lines_total`); both are above 0 and they sum to the batch's lines. The store says
   the same on its own: the lines' `worker_id`s are two, with those two counts. And each replica's
   engine finished exactly as many requests as its replica answered lines, so no line ran on both.
2. One replica is SIGKILLed mid-batch, after it answered some lines, with lines claimed. Its engine
   core is stopped (SIGSTOP) first, so it provably holds claims at the kill (its
   wattserve_batch_lines_in_flight reads `--batch-max-in-flight`, and none of them can finish): between
   two waves a replica may hold none, and the takeover would go untested by chance. Then the replica and
   its engine are killed. The balancer's health check takes it out; the survivor takes over its claims
   once their lease has run out, and the batch completes through the balancer, each custom_id once. The
   store, read right after the kill and again at the end, shows it line by line: the claims that changed
   hands (only the live replica can take one) all came from one worker and went to the other, they are
   every claim that worker held, and each new claim came at least `--batch-lease-seconds` after the
   dead one's last renewal; every line answered before the kill reached the output file unchanged (its
   record holds ids drawn fresh on each run) and the dead worker answered none after; the survivor's own
   count is its share in the store, and its engine ran exactly those lines.

One pair of replicas serves the module: test 2 kills one and nothing runs after it, so neither test pays
for a restart (about 40 s each); test 1 comes first in pytest's order, with both alive. Lines
are flex requests: `--flex-max-wait-seconds 0.5` keeps a lone one from waiting 30 s. The lease is 8 s:
short enough that a takeover is quick, long enough that a replica stalled for a few seconds on this busy
machine still renews its claims in time. Deadlines only catch hangs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import httpx
import openai
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import haproxy_server
from tests.e2e.conftest import API_KEY, MODEL, STARTUP_TIMEOUT_S, _Launch
from tests.e2e.gauges import wait_for_idle_gauges
from tests.postgres_server import start_server
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.fault_tolerance]
HANG_S = 300  # a deadline that only a hang reaches
# Two servers compiling their engines at once on a busy machine take up to twice one server's start.
PAIR_START_S = 2 * STARTUP_TIMEOUT_S
LINES = 120
# Test 2's batch is longer: the replica to kill must still find lines to claim once it has answered
# some and its engine is stopped, while the other runs the batch at full speed (tens of lines a second).
KILL_LINES = 600
IN_FLIGHT = 4
LEASE_S = 8
FLAGS = ["--no-enable-lora", "--energy-meter", "estimated", "--flex-max-wait-seconds", "0.5"]
FLAGS += ["--batch-max-in-flight", str(IN_FLIGHT), "--flex-batch-size", str(IN_FLIGHT)]
FLAGS += ["--batch-lease-seconds", str(LEASE_S)]
REPLICAS = ("a", "b")
SURVIVOR, VICTIM = REPLICAS
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredLine:
    """A batch line as the store holds it."""

    custom_id: str
    state: str
    worker_id: str | None
    claimed_at: float | None
    record: dict[str, Any] | None


@dataclass(frozen=True)
class Counts:
    """One replica's counts, from one scrape of its own /metrics."""

    answered: float
    failed: float
    in_flight: float
    engine_finished: float  # vLLM's requests finished by this replica's engine, over every reason


@dataclass
class Cluster:
    """The database, the replicas and the balancer in front of them."""

    store_url: str
    replicas: dict[str, _Launch]
    balancer: haproxy_server.HAProxy

    def api(self) -> openai.OpenAI:
        """OpenAI's client, through the balancer (retrying nothing itself)."""
        return openai.OpenAI(
            base_url=f"{self.balancer.url}/v1", api_key=API_KEY, max_retries=0, timeout=HANG_S
        )

    def counts(self, name: str) -> Counts:
        """The replica's counts, scraped from it directly, not through the balancer."""
        with httpx.Client(base_url=self.replicas[name].base_url, timeout=60) as http:
            page = http.get("/metrics").text
        found: Counter[str] = Counter()
        for family in text_string_to_metric_families(page):
            for sample in family.samples:
                if sample.name == "wattserve_batch_lines_total":
                    found[sample.labels["outcome"]] += sample.value
                elif sample.name in ("wattserve_batch_lines_in_flight", "vllm:request_success_total"):
                    found[sample.name] += sample.value
        return Counts(
            found["answered"],
            found["failed"],
            found["wattserve_batch_lines_in_flight"],
            found["vllm:request_success_total"],
        )

    def stored_lines(self, batch_id: str) -> dict[int, StoredLine]:
        """The batch's lines by line number, as committed in the store now."""
        import psycopg  # noqa: PLC0415 - an optional extra, checked by the fixture

        with psycopg.connect(self.store_url) as db:
            rows = db.execute(
                "SELECT line_no, custom_id, state, worker_id, claimed_at, record FROM batch_lines"
                " WHERE batch_id = %s",
                (batch_id,),
            ).fetchall()
        return {
            line_no: StoredLine(custom_id, state, worker_id, claimed_at, record and json.loads(record))
            for line_no, custom_id, state, worker_id, claimed_at, record in rows
        }


def _skip(reason: str) -> NoReturn:
    print(f"batch replica tests skipped: {reason}")  # noqa: T201 - the reason, in the output
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    pytest.importorskip("psycopg", reason="no PostgreSQL driver: pip install 'wattserve[postgres]'")
    import psycopg  # noqa: PLC0415 - an optional extra, checked just above

    if (balancer_binary := haproxy_server.binary()).path is None:  # before 80 s of server starts
        _skip(f"no HAProxy: {balancer_binary.missing}")
    with contextlib.ExitStack() as stack:
        try:
            postgres = start_server()
        except RuntimeError as err:
            _skip(f"no PostgreSQL server: {err}")
        stack.callback(postgres.stop)
        with psycopg.connect(postgres.url(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE batch_replicas")
        store_url = postgres.url("batch_replicas")
        replicas: dict[str, _Launch] = {}
        for name in REPLICAS:
            root = tmp_path_factory.mktemp(f"replica-{name}")
            flags = [*FLAGS, "--cache-dir", str(root / "cache"), "--batch-store", store_url]
            replicas[name] = _Launch(root, flags)
            stack.callback(_stop_if_running, replicas[name])
        for launch in replicas.values():
            _wait_started(launch)
        backends = {name: f"127.0.0.1:{launch.port}" for name, launch in replicas.items()}
        try:
            balancer = haproxy_server.start(tmp_path_factory.mktemp("haproxy"), backends)
        except RuntimeError as err:
            _skip(str(err))
        stack.callback(balancer.stop)
        wait_until(
            lambda: balancer.exited() is not None or balancer.all_up(REPLICAS),
            lambda: f"both replicas UP in HAProxy (last: {balancer.states()})",
            HANG_S,
        )
        if balancer.exited() is not None:
            _skip(f"haproxy exited with {balancer.exited()}: {balancer.log_path.read_text()[-2000:]}")
        yield Cluster(store_url, replicas, balancer)


def _wait_started(launch: _Launch) -> None:
    """Wait until the replica is healthy or has exited, then check it as every e2e server is checked."""

    def healthy_or_exited() -> bool:
        if launch.process.poll() is not None:
            return True
        try:
            return httpx.get(f"{launch.base_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def what() -> str:
        return f"the replica healthy:\n{launch.log_path.read_text()[-3000:]}"

    wait_until(healthy_or_exited, what, PAIR_START_S)
    launch.ready()  # at once now; fails the test with the log if the server exited


def _stop_if_running(launch: _Launch) -> None:
    if launch.process.poll() is None:
        launch.stop()  # asserts the log holds no traceback


def submit(api: openai.OpenAI, name: str, count: int) -> str:
    """A batch of `count` greedy chat lines, each exactly 4 tokens long, through the balancer; its id."""
    lines = []
    for index in range(count):
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
    assert (batch.status, batch.request_counts.total) == ("in_progress", count)
    return batch.id


def _balancer_failure(err: openai.APIError) -> bool:
    """A connection the balancer or a backend cut, or the balancer's own error page: not an answer."""
    if isinstance(err, openai.APIConnectionError):
        return True
    return (
        isinstance(err, openai.APIStatusError)
        and err.status_code in (502, 503, 504)
        and "<html>" in err.response.text  # HAProxy's page; wattserve's errors are OpenAI JSON
    )


def wait_finished(api: openai.OpenAI, batch_id: str) -> Any:
    """Poll through the balancer until the batch is no longer running; the batch then."""
    seen: list[Any] = []

    def finished() -> bool:
        try:
            seen.append(api.batches.retrieve(batch_id))
        except openai.APIError as err:
            if not _balancer_failure(err):
                raise
            return False  # asking again is the client's job
        assert seen[-1].id == batch_id
        assert seen[-1].request_counts.failed == 0, seen[-1]
        return seen[-1].status not in ("validating", "in_progress", "finalizing")

    wait_until(finished, lambda: f"batch {batch_id} finished (last: {seen[-1:]})", HANG_S)
    return seen[-1]


def check_output(api: openai.OpenAI, batch: Any, name: str, count: int) -> dict[str, dict[str, Any]]:
    """The batch of `count` lines completed, each answered once; its output's records by custom_id."""
    assert batch.status == "completed", batch
    counts = batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (count, count, 0)
    assert batch.error_file_id is None
    rows = [json.loads(row) for row in api.files.content(batch.output_file_id).text.splitlines()]
    assert Counter(row["custom_id"] for row in rows) == Counter(f"{name}-{i}" for i in range(count))
    for row in rows:
        assert row["error"] is None, row
        assert row["response"]["status_code"] == 200, row
        assert row["response"]["body"]["usage"]["completion_tokens"] == 4, row
    return {row["custom_id"]: row for row in rows}


def answered_since(cluster: Cluster, before: dict[str, Counts]) -> dict[str, float]:
    """Lines each replica answered since `before`, once their sum has reached LINES."""
    # A replica counts a line just after the store took its answer, so a batch seen completed may be
    # ahead of the last count by a moment: wait for the sum, then check it exactly.
    deltas: dict[str, float] = {}

    def reached() -> bool:
        deltas.update({n: cluster.counts(n).answered - before[n].answered for n in before})
        return sum(deltas.values()) >= LINES

    wait_until(reached, lambda: f"the replicas' answered counts summing to {LINES} (last: {deltas})", HANG_S)
    return deltas


def test_a_batch_through_the_balancer_is_answered_once_per_line_by_both_replicas(cluster: Cluster) -> None:
    assert all(launch.process.poll() is None for launch in cluster.replicas.values()), "a replica is down"
    before = {name: cluster.counts(name) for name in REPLICAS}
    api = cluster.api()
    batch_id = submit(api, "spread", LINES)
    check_output(api, wait_finished(api, batch_id), "spread", LINES)

    answered = answered_since(cluster, before)
    assert sum(answered.values()) == LINES, answered
    logger.info("lines answered by each replica: %s", answered)
    assert all(count > 0 for count in answered.values()), f"a replica answered no line: {answered}"
    # The store, on its own, says which replica's runner wrote each answer: two of them, as many each.
    stored = cluster.stored_lines(batch_id)
    assert {line.state for line in stored.values()} == {"done"}
    by_worker = Counter(line.worker_id for line in stored.values())
    assert sorted(by_worker.values()) == sorted(answered.values()), (by_worker, answered)
    for name in REPLICAS:
        wait_for_idle_gauges(cluster.replicas[name], HANG_S)
        after = cluster.counts(name)
        assert after.failed == before[name].failed
        # Each engine ran exactly the lines its replica answered: no line ran on both.
        assert after.engine_finished - before[name].engine_finished == answered[name], name


def kill_with_claims(cluster: Cluster, name: str) -> None:
    """Stop the replica's engine core, wait until it holds a full set of claims, SIGKILL the whole tree."""
    launch = cluster.replicas[name]
    process = psutil.Process(launch.process.pid)
    engine_cores = [child for child in process.children(recursive=True) if "EngineCore" in child.name()]
    assert engine_cores
    for engine_core in engine_cores:
        engine_core.suspend()  # no line of this replica can finish from here on
    seen: list[Counts] = []

    def holding_claims() -> bool:
        seen.append(cluster.counts(name))
        return seen[-1].in_flight == IN_FLIGHT

    wait_until(
        holding_claims,
        lambda: f"{IN_FLIGHT} lines in flight on the stopped replica (last: {seen[-1:]})",
        HANG_S,
    )
    # The whole tree dies at once, as on a lost host: everything is stopped first, so no child outlives
    # its parent long enough to run on (a stopped process dies of SIGKILL too).
    under = process.children(recursive=True)
    for member in [process, *under]:
        member.suspend()
    launch.process.kill()
    for child in under:
        child.kill()
    assert launch.process.wait(timeout=HANG_S) == -signal.SIGKILL  # reaped by its parent, this test
    _, alive = psutil.wait_procs(under, timeout=HANG_S)
    assert not alive
    log_text = launch.log_path.read_text()
    assert "Traceback" not in log_text, f"the killed replica logged a traceback:\n{log_text[-6000:]}"


def test_a_replica_killed_mid_batch_hands_its_lines_to_the_other(cluster: Cluster) -> None:
    assert cluster.replicas[VICTIM].process.poll() is None, "the replica to kill is not running"
    before = {name: cluster.counts(name) for name in REPLICAS}
    api = cluster.api()
    batch_id = submit(api, "kill", KILL_LINES)

    victim_answered: list[float] = []

    def victim_answered_some() -> bool:
        victim_answered.append(cluster.counts(VICTIM).answered - before[VICTIM].answered)
        return victim_answered[-1] > 0

    wait_until(victim_answered_some, "a first line answered by the replica to kill", HANG_S)
    kill_with_claims(cluster, VICTIM)
    at_kill = cluster.stored_lines(batch_id)  # the replica is dead: its share is final
    wait_until(
        lambda: cluster.balancer.states().get(VICTIM, "").startswith("DOWN"),
        lambda: f"HAProxy taking the killed replica out (last: {cluster.balancer.states()})",
        HANG_S,
    )
    assert cluster.balancer.all_up([SURVIVOR])

    by_id = check_output(api, wait_finished(api, batch_id), "kill", KILL_LINES)
    at_end = cluster.stored_lines(batch_id)
    assert {line.state for line in at_end.values()} == {"done"}

    # Claims that changed hands after the kill can only have gone to the one replica left alive, and only
    # from the dead one: all of them came from one worker id and went to the other.
    claimed = {no: line for no, line in at_kill.items() if line.state == "claimed"}
    moved = {no: line for no, line in claimed.items() if at_end[no].worker_id != line.worker_id}
    assert moved, f"no claim changed hands; claimed at the kill: {claimed}"
    dead_ids = {line.worker_id for line in moved.values()}
    survivor_ids = {at_end[no].worker_id for no in moved}
    assert len(dead_ids) == len(survivor_ids) == 1, (dead_ids, survivor_ids)
    (dead_id,), (survivor_id,) = dead_ids, survivor_ids
    assert dead_id != survivor_id
    # Every claim the dead replica held was taken over, each only once its lease had run out.
    assert {no for no, line in claimed.items() if line.worker_id == dead_id} == set(moved)
    for no, line in moved.items():
        assert line.claimed_at is not None
        assert at_end[no].claimed_at is not None
        assert at_end[no].claimed_at >= line.claimed_at + LEASE_S, (no, line, at_end[no])
    # What was answered before the kill is what the output holds, untouched; the dead answered no more.
    done_at_kill = {line.custom_id: line.record for line in at_kill.values() if line.state == "done"}
    for custom_id, record in done_at_kill.items():
        assert by_id[custom_id] == record
    by_worker = Counter(line.worker_id for line in at_end.values())
    logger.info(
        "lines at the kill: %s; taken over: %d; answered by the killed replica: %d, by the survivor: %d",
        dict(Counter(line.state for line in at_kill.values())),
        len(moved),
        by_worker[dead_id],
        by_worker[survivor_id],
    )
    assert set(by_worker) == {dead_id, survivor_id}
    dead_done = sum(line.worker_id == dead_id for line in at_kill.values() if line.state == "done")
    assert by_worker[dead_id] == dead_done >= victim_answered[-1] > 0

    # The survivor's own counts agree with the store, and its engine ran each of its lines once.
    survivor = cluster.replicas[SURVIVOR]
    wait_until(
        lambda: cluster.counts(SURVIVOR).answered - before[SURVIVOR].answered >= by_worker[survivor_id],
        "the survivor counting its last answered line",
        HANG_S,
    )
    wait_for_idle_gauges(survivor, HANG_S)
    after = cluster.counts(SURVIVOR)
    assert after.answered - before[SURVIVOR].answered == by_worker[survivor_id]
    assert after.failed == before[SURVIVOR].failed
    assert after.engine_finished - before[SURVIVOR].engine_finished == by_worker[survivor_id]
