"""A local fleet: two replicas behind a real HAProxy, scraped by a real Prometheus with the shipped rules.

The module starts two wattserve replicas on the embedded model (the default configuration: LoRA on, the
estimated energy meter), an HAProxy in front of them (Debian's package, tests/haproxy_server.py) and a
Prometheus (Debian's package) scraping both every second with deploy/prometheus/wattserve-rules.yml
loaded. Where either package cannot be installed the module is skipped with the reason. It is marked
`fault_tolerance` (it kills a replica and takes minutes), so the default run, which CI times, leaves it
out: run it with `pytest -m fault_tolerance tests/e2e/test_fleet.py`. One pair serves every test; the
last one kills a replica and nothing runs after it.

1. The fleet energy rule `job:wattserve_metered_energy_joules:sum` is the sum of the replicas'
   `/v1/energy` `joules_since_start`. Metered energy never settles (the estimate counts an idle
   server's CPU time, scrapes included), so two reads at two moments never compare equal. What is
   exact instead: a recorded sample is the sum of the per-replica samples its evaluation read (found
   among the stored ones: the last stamped at or before it, or the one before if that scrape was still
   being stored), and each of those lies between two of the replica's own `/v1/energy` figures, one
   answered before the scrape began and one asked after it ended (tests/e2e/energy_reads.py says why).
   Output tokens settle: Prometheus, each replica's page and the clients' usage agree exactly. The
   fleet J/token rules evaluate to a positive figure for the fleet and for each replica.
2. A request naming an adapter that one replica loaded at startup and the other holds only as a folder
   under `--adapter-dir` (copied there once it runs, so not loaded) is served by the second, which
   loads it first and lists it afterwards; both answer it alike.
3. One replica dies mid-load, with requests in it: its engine is stopped first (SIGSTOP), so the
   requests routed to it are provably held there and unanswered, then its process tree is SIGKILLed.
   HAProxy sends a request again only when its connection failed before any byte was sent
   (`retry-on conn-failure`; tests/haproxy_server.py says why), so each of the 40 requests ends with one
   complete answer or a clean error: the answers are exactly the requests the survivor's engine
   finished, the errors exactly the requests the dead replica held. The balancer here runs no health
   checks, so the dead replica stays in its rotation and every request sent after the kill that picks
   it meets a refused connection; each is redispatched, and all of them are answered.

Counts read right after the answers are final: a replica records a request (vLLM's and its own
counters, its tokens) before the answer leaves. A flooded replica as routers read it is
tests/e2e/test_router_metrics.py's.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import psutil
import pytest

from server.default_model import ensure_default_model
from tests import deploy_files, haproxy_server
from tests.e2e.adapter_files import copy_adapter
from tests.e2e.conftest import API_KEY, MODEL, STARTUP_TIMEOUT_S, _cache_dir, _Launch
from tests.e2e.energy_reads import EnergyReads
from tests.e2e.gauges import gauges, page_sums, wait_for_idle_gauges
from tests.e2e.prometheus_server import JOB, Prometheus
from tests.prometheus_install import binaries
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.fault_tolerance]
HANG_S = 300  # a deadline that only a hang reaches
PAIR_START_S = 2 * STARTUP_TIMEOUT_S  # two engines compiling at once on a busy machine
REPLICAS = ("a", "b")
SURVIVOR, VICTIM = REPLICAS
ADAPTER = "fleet-lora"
ENERGY_RULE = "job:wattserve_metered_energy_joules:sum"
METERED = "wattserve_metered_energy_joules_total"
KILL_LOAD = 40
HELD = ("wattserve_requests_admitted", "wattserve_requests_queued")  # where a stopped engine's requests wait
logger = logging.getLogger(__name__)


@dataclass
class Fleet:
    """The replicas, the balancer in front of them and the Prometheus scraping them."""

    replicas: dict[str, _Launch]
    adapter_dirs: dict[str, Path]
    balancer: haproxy_server.HAProxy
    prometheus: Prometheus

    def name_of(self, instance: str) -> str:
        """The replica a Prometheus `instance` label (host:port) stands for."""
        return next(name for name, launch in self.replicas.items() if instance.endswith(f":{launch.port}"))


def _skip(reason: str) -> NoReturn:
    print(f"fleet tests skipped: {reason}")  # noqa: T201 - the reason, in the output
    pytest.skip(reason)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_started(launches: dict[str, _Launch]) -> None:
    def up_or_exited(launch: _Launch) -> bool:
        return launch.process.poll() is not None or _healthy(launch.base_url)

    wait_until(
        lambda: all(up_or_exited(launch) for launch in launches.values()), "both replicas up", PAIR_START_S
    )
    for launch in launches.values():
        launch.ready()  # at once now; fails the test with the log if the server exited


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    # Both are checked before 80 s of server starts.
    if (balancer_binary := haproxy_server.binary()).path is None:
        _skip(f"no HAProxy: {balancer_binary.missing}")
    if (prometheus_binary := binaries().prometheus) is None:
        _skip(f"no Prometheus: {binaries().missing}")
    with contextlib.ExitStack() as stack:
        roots = {name: tmp_path_factory.mktemp(f"fleet-{name}") for name in REPLICAS}
        adapter_dirs = {name: root / "adapters" for name, root in roots.items()}
        for folder in adapter_dirs.values():
            folder.mkdir()
        # Replica a starts with the adapter; b gets it only once it runs (below), so b has not loaded it.
        demo = ensure_default_model(_cache_dir(roots[SURVIVOR])).adapter_dirs["demo-alpha"]
        copy_adapter(demo, adapter_dirs[SURVIVOR] / ADAPTER)
        replicas = {}
        for name, root in roots.items():
            flags = ["--energy-meter", "estimated", "--adapter-dir", str(adapter_dirs[name])]
            replicas[name] = _Launch(root, flags)
            stack.callback(_stop_if_running, replicas[name])
        _wait_started(replicas)
        copy_adapter(demo, adapter_dirs[VICTIM] / ADAPTER)

        backends = {name: f"127.0.0.1:{launch.port}" for name, launch in replicas.items()}
        try:
            balancer = haproxy_server.start(tmp_path_factory.mktemp("haproxy"), backends, health_checks=False)
        except RuntimeError as err:
            _skip(str(err))
        stack.callback(balancer.stop)
        wait_until(
            lambda: balancer.exited() is not None or _healthy(balancer.url), "the balancer answering", HANG_S
        )
        if balancer.exited() is not None:
            _skip(f"haproxy exited with {balancer.exited()}: {balancer.log_path.read_text()[-2000:]}")

        targets = list(backends.values())
        prometheus = Prometheus(
            prometheus_binary, tmp_path_factory.mktemp("prometheus"), targets, deploy_files.RULES
        )
        stack.callback(prometheus.stop)
        prometheus.wait_ready()
        yield Fleet(replicas, adapter_dirs, balancer, prometheus)


def _stop_if_running(launch: _Launch) -> None:
    if launch.process.poll() is None:
        launch.stop()  # asserts the log holds no traceback


def chat(base_url: str, marker: str, *, model: str = MODEL, max_tokens: int = 16) -> httpx.Response:
    """One greedy chat request of exactly `max_tokens` tokens, `marker` in its prompt and as its user."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"Request {marker} says"}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "user": marker,
    }
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=HANG_S) as http:
        return http.post("/v1/chat/completions", json=body)


def series(prometheus: Prometheus, expr: str) -> dict[str, list[tuple[float, float]]]:
    """A range selector's samples as (seconds, value), by `instance` (`job` for a fleet rule)."""
    return {
        found["metric"].get("instance", found["metric"].get("job")): [
            (float(t), float(v)) for t, v in found["values"]
        ]
        for found in prometheus.query(expr)
    }


def bracketed_evaluation(fleet: Fleet, reads: dict[str, EnergyReads], found: dict[str, Any]) -> bool:
    """Whether the fleet rule's latest evaluation has each scrape it may have read bracketed by reads.

    It read, of each replica, the last sample stamped at or before it, or the one before that if the
    evaluation ran while that scrape was still being stored. Fills `found` with the rule's value and,
    per replica, each such (sample, read before, read after).
    """
    found.clear()
    recorded = series(fleet.prometheus, f'{ENERGY_RULE}{{job="{JOB}"}}[1m]').get(JOB, [])
    raw = series(fleet.prometheus, f'{METERED}{{job="{JOB}"}}[1m]')
    durations = series(fleet.prometheus, f'scrape_duration_seconds{{job="{JOB}"}}[1m]')
    if not recorded or len(raw) != len(REPLICAS):
        return False
    at_s, total = recorded[-1]
    candidates = {}
    for instance, samples in raw.items():
        took_s = dict(durations.get(instance, []))
        name, brackets = fleet.name_of(instance), []
        for stamp_s, value in [sample for sample in samples if sample[0] <= at_s][-2:]:
            # A scrape is stamped as it starts, to the millisecond below; its page is made before it ends.
            end_s = stamp_s + 0.001 + took_s.get(stamp_s, math.inf)
            if (around := reads[name].around(stamp_s, end_s)) is None:
                return False
            brackets.append((value, *around))
        if len(brackets) < 2:
            return False
        candidates[name] = brackets
    found.update(at_s=at_s, total=total, candidates=candidates)
    return True


def test_fleet_energy_rule_is_the_sum_of_the_replicas_metered_joules(fleet: Fleet) -> None:
    rule = next(rule for rule in deploy_files.rules() if rule.name == ENERGY_RULE)
    assert rule.group == "wattserve-fleet"
    # One answered request each before Prometheus reads the token counters, so the load's tokens are
    # an increase within the J/token rules' 5-minute window on both replicas.
    tokens_sent = sum(
        chat(launch.base_url, f"warm-{name}").json()["usage"]["completion_tokens"]
        for name, launch in fleet.replicas.items()
    )
    first_tokens = f'sum by (instance) (wattserve_generation_tokens_total{{job="{JOB}"}}) > 0'
    wait_until(
        lambda: len(fleet.prometheus.query(first_tokens)) == len(REPLICAS),
        "Prometheus holding both replicas' first tokens",
        HANG_S,
    )
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda i: chat(fleet.balancer.url, f"energy-{i}"), range(16)))
    assert all(answer.status_code == 200 for answer in answers), [
        a.text for a in answers if a.status_code != 200
    ]
    tokens_sent += sum(answer.json()["usage"]["completion_tokens"] for answer in answers)
    for launch in fleet.replicas.values():
        wait_for_idle_gauges(launch, HANG_S)

    # Tokens settle once no request runs: every reader has the same count.
    tokens = "wattserve_generation_tokens_total"
    per_replica = {name: page_sums(launch, (tokens,))[tokens] for name, launch in fleet.replicas.items()}
    assert sum(per_replica.values()) == tokens_sent
    assert all(count > 0 for count in per_replica.values()), per_replica

    def scraped_settled() -> bool:
        found = fleet.prometheus.query(f'sum by (instance) ({tokens}{{job="{JOB}"}})')
        return {fleet.name_of(r["metric"]["instance"]): float(r["value"][1]) for r in found} == per_replica

    wait_until(scraped_settled, "Prometheus scraping the settled token counts", HANG_S)

    # Metered energy moves: bracket each scrape the rule read between two of its replica's own reads.
    reads = {name: EnergyReads(launch.base_url, API_KEY) for name, launch in fleet.replicas.items()}
    found: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        for replica_reads in reads.values():
            stack.enter_context(replica_reads.reading())
        wait_until(
            lambda: bracketed_evaluation(fleet, reads, found),
            lambda: f"a fleet rule evaluation with its scrapes bracketed (last: {found})",
            HANG_S,
        )
    a, b = (found["candidates"][name] for name in REPLICAS)
    used = [(x, y) for x in a for y in b if math.isclose(x[0] + y[0], found["total"], rel_tol=1e-12)]
    assert used, f"the rule's {found['total']} J is no sum of samples it could read: {found}"
    for scraped, low, high in used[0]:
        assert low.joules <= scraped <= high.joules, (scraped, low, high)
    lows, highs = (sum(bracket[i].joules for bracket in used[0]) for i in (1, 2))
    assert lows <= found["total"] <= highs
    logger.info("fleet joules: rule %s, /v1/energy sums %s to %s", found["total"], lows, highs)

    # The J/token rules of the same group, recorded at the same evaluation, read the load.
    for name, labels in (("job", 1), ("instance", 2)):
        recorded = fleet.prometheus.query(
            f"{name}:wattserve_metered_joules_per_output_token:ratio_rate5m", found["at_s"]
        )
        assert len(recorded) == labels, recorded
        assert all(0 < float(r["value"][1]) < math.inf for r in recorded), recorded
    fleet_rules = {r.name for r in deploy_files.rules() if r.group == rule.group}
    loaded = [r for r in fleet.prometheus.rules() if r["name"] in fleet_rules]
    assert len(loaded) == len(fleet_rules)
    assert all(r["health"] == "ok" for r in loaded), [r for r in loaded if r["health"] != "ok"]


def listed(launch: _Launch) -> set[str]:
    """The models the replica lists."""
    with httpx.Client(base_url=launch.base_url, headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        return {card["id"] for card in http.get("/v1/models").json()["data"]}


def adapter_card(launch: _Launch) -> httpx.Response:
    """The replica's `/v1/adapters/{ADAPTER}`."""
    with httpx.Client(base_url=launch.base_url, headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        return http.get(f"/v1/adapters/{ADAPTER}")


def test_an_adapter_folder_not_loaded_is_loaded_on_its_first_request(fleet: Fleet) -> None:
    loaded, unloaded = (fleet.replicas[name] for name in (SURVIVOR, VICTIM))
    assert ADAPTER in listed(loaded)
    assert ADAPTER not in listed(unloaded)
    assert adapter_card(unloaded).status_code == 404
    assert (fleet.adapter_dirs[VICTIM] / ADAPTER).is_dir()

    first = chat(unloaded.base_url, "first-adapter", model=ADAPTER, max_tokens=8)
    assert first.status_code == 200, first.text
    assert first.json()["model"] == ADAPTER
    card = adapter_card(unloaded).json()
    assert card["state"] == "ready", card
    assert Path(card["path"]).resolve() == (fleet.adapter_dirs[VICTIM] / ADAPTER).resolve()
    assert first.headers["x-adapter-version"] == f"{ADAPTER}@{card['version']}"
    assert ADAPTER in listed(unloaded)
    # The same weights answer the same greedy request alike on either replica.
    reference = chat(loaded.base_url, "first-adapter", model=ADAPTER, max_tokens=8)
    assert reference.status_code == 200, reference.text
    assert first.json()["choices"][0]["message"] == reference.json()["choices"][0]["message"]
    for index in range(2):  # one on each replica, through the balancer
        through = chat(fleet.balancer.url, f"adapter-{index}", model=ADAPTER, max_tokens=8)
        assert through.status_code == 200, through.text


def send(base_url: str, marker: str) -> tuple[int | None, str]:
    """How one request ended: its status and body, or None and the error where the connection was cut.

    A timeout is raised: a request that never ends fails the test.
    """
    try:
        response = chat(base_url, marker, max_tokens=32)
    except httpx.TimeoutException:
        raise
    except httpx.TransportError as err:  # the connection cut: an error the client sees
        return None, repr(err)
    return response.status_code, response.text


def test_a_replica_killed_mid_load_leaves_each_request_answered_once_or_failed(fleet: Fleet) -> None:
    survivor, victim = fleet.replicas[SURVIVOR], fleet.replicas[VICTIM]
    finished = ("vllm:request_success_total", "wattserve_requests_total")
    before = page_sums(survivor, finished)
    engine_cores = [
        p for p in psutil.Process(victim.process.pid).children(recursive=True) if "EngineCore" in p.name()
    ]
    assert engine_cores
    for engine_core in engine_cores:
        engine_core.suspend()  # nothing routed to the victim can finish from here on
    with concurrent.futures.ThreadPoolExecutor(max_workers=KILL_LOAD) as pool:
        futures = [pool.submit(send, fleet.balancer.url, f"kill-{i}") for i in range(KILL_LOAD)]
        held: list[float] = []

        def all_placed() -> bool:
            # The victim's count only grows and the answers can only come from the survivor, so once
            # they add up to the load no request is still on its way to the victim.
            held.append(sum(gauges(victim)[name] for name in HELD))
            return held[-1] + sum(future.done() for future in futures) == KILL_LOAD

        wait_until(all_placed, lambda: f"every request answered or held (held: {held[-1:]})", HANG_S)
        victim.kill()
        outcomes = [future.result() for future in futures]

    assert held[-1] > 0, "no request was held by the replica killed"
    answered = [json.loads(body) for status, body in outcomes if status == 200]
    failed = [(status, body) for status, body in outcomes if status != 200]
    assert len(failed) == held[-1], failed
    # The balancer's error page or a cut connection, never an answer of wattserve's.
    assert all(status is None or (status == 502 and "<html>" in body) for status, body in failed), failed
    for body in answered:
        assert body["usage"]["completion_tokens"] == 32, body
        assert body["choices"][0]["finish_reason"] == "length", body
    assert len({body["id"] for body in answered}) == len(answered)

    wait_for_idle_gauges(survivor, HANG_S)
    after = page_sums(survivor, finished)
    # The survivor ran each answered request once and nothing the victim had held.
    assert {name: after[name] - before[name] for name in finished} == dict.fromkeys(finished, len(answered))

    # The victim stays in the rotation (no health checks): each request that picks it is redispatched.
    redispatched = sum(fleet.balancer.redispatches().values())
    later = [send(fleet.balancer.url, f"after-{i}") for i in range(6)]
    assert [(status, body) for status, body in later if status != 200] == []
    assert sum(fleet.balancer.redispatches().values()) > redispatched
    wait_for_idle_gauges(survivor, HANG_S)
    final = page_sums(survivor, finished)
    assert final["vllm:request_success_total"] - after["vllm:request_success_total"] == len(later)
    logger.info("kill load: %d answered, %d failed", len(answered), len(failed))
