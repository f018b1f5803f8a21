"""Run a configured load test against a target: idle power, each load point in turn, then the findings."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import platform
import time
from collections.abc import Callable

import aiohttp
import uvloop
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from loadtest.aggregate import PointTiming, summarize_point
from loadtest.arrivals import schedule
from loadtest.client import Outcome, StreamingClient
from loadtest.config import RunConfig
from loadtest.results import LoadSpec, PointResult, RequestRecord, RunResult
from loadtest.saturation import stop_reason
from loadtest.scheduler import Sent, Window, run_closed_loop, run_open_loop
from loadtest.scrape import METERED, MetricsProbe
from loadtest.slo import best_point, pareto_front
from loadtest.version import harness_version
from loadtest.workload import RequestSpec, build_requests

CLOSED_LOOP_REQUESTS = 4096  # prompts a closed-loop point cycles through
SETTLE_S = 1.0  # after a point, before its last scrape: servers update some counters after the answer


class TargetError(RuntimeError):
    """The target cannot be load-tested (unreachable, not OpenAI-compatible, key refused)."""


def _token_counter(tokenizer: str | None) -> Callable[[str], int] | None:
    if tokenizer is None:
        return None
    from transformers import AutoTokenizer  # noqa: PLC0415 - only needed for the fallback

    loaded = AutoTokenizer.from_pretrained(tokenizer)
    return lambda text: len(loaded.encode(text, add_special_tokens=False))


async def _served_models(session: aiohttp.ClientSession, url: str) -> list[str]:
    try:
        async with session.get(f"{url}/v1/models", timeout=aiohttp.ClientTimeout(total=30)) as response:
            status, text = response.status, await response.text()
    except (aiohttp.ClientError, asyncio.TimeoutError) as err:
        raise TargetError(f"cannot reach {url}: {err!r}") from err
    if status != 200:
        raise TargetError(f"{url}/v1/models answered {status}: {text[:300]}")
    return [model["id"] for model in json.loads(text).get("data", [])]


async def _idle_watts(probe: MetricsProbe, seconds: float) -> float | None:
    """Mean power with no traffic, from the metered-energy counter over `seconds`."""
    if seconds <= 0:
        return None
    first = await probe.scrape()
    await asyncio.sleep(seconds)
    last = await probe.scrape()
    if first is None or last is None or METERED not in first.totals or METERED not in last.totals:
        return None
    return (last.totals[METERED] - first.totals[METERED]) / (last.at - first.at)


def _record(point: int, sent: Sent, spec: RequestSpec, started_at: float, window: Window) -> RequestRecord:
    outcome = sent.outcome

    def offset(at: float | None) -> float | None:
        return None if at is None else at - started_at

    return RequestRecord(
        index=sent.index,
        point=point,
        model=spec.model,
        service_tier=spec.service_tier,
        response_service_tier=outcome.response_service_tier,
        phase=window.phase(sent.scheduled_at_s),
        scheduled_at_s=sent.scheduled_at_s,
        dispatched_at_s=sent.dispatched_at_s,
        sent_at_s=outcome.sent_at - started_at,
        first_token_at_s=offset(outcome.first_token_at),
        end_at_s=offset(outcome.end_at),
        itl_s=outcome.itl_s,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        token_source=outcome.token_source,
        energy_joules=outcome.energy_joules,
        energy_source=outcome.energy_source,
        status_code=outcome.status_code,
        error=outcome.error,
        error_detail=outcome.error_detail,
    )


class Runner:
    """Holds the clients of one run and runs its points."""

    def __init__(self, config: RunConfig, session: aiohttp.ClientSession, console: Console):
        self.config = config
        self._session = session
        self._console = console
        self._client = StreamingClient(session, config.url, _token_counter(config.workload.tokenizer))

    async def run_point(self, index: int, load: LoadSpec) -> tuple[PointResult, list[RequestRecord]]:
        """One load point, with its own seeded schedule and prompts."""
        config, seed = self.config, self.config.seed + 1000 * index
        window = Window(config.warmup_s, config.duration_s - config.cooldown_s)
        if load.mode == "open":
            offsets = schedule(load.arrival, load.rate, config.duration_s, seed, load.burstiness or 1.0)
            specs = build_requests(config.workload, len(offsets), seed)
            total = len(offsets)
        else:
            specs = build_requests(config.workload, CLOSED_LOOP_REQUESTS, seed)
            total = None

        async def send(request_index: int) -> Outcome:
            return await self._client.send(specs[request_index % len(specs)])

        columns = (
            TextColumn(f"point {index} {load.label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=self._console, refresh_per_second=4) as progress:
            task = progress.add_task("requests", total=total)

            def on_done(_: Sent) -> None:
                progress.advance(task)

            cpu_before = time.process_time()
            probe = MetricsProbe(self._session, config.url, config.scrape_period_s)
            async with probe:
                started_at = time.perf_counter()
                if load.mode == "open":
                    sents = await run_open_loop(offsets, send, started_at, load.concurrency, on_done)
                else:
                    sents = await run_closed_loop(
                        load.concurrency, config.duration_s, send, started_at, on_done
                    )
                # A schedule can run out before the point's duration: the window's energy and scrapes
                # must still cover all of it.
                await asyncio.sleep(max(0.0, started_at + config.duration_s - time.perf_counter()))
                ended_at = time.perf_counter()
                await asyncio.sleep(SETTLE_S)
            cpu_seconds = time.process_time() - cpu_before
        records = [_record(index, s, specs[s.index % len(specs)], started_at, window) for s in sents]
        timing = PointTiming(started_at, ended_at, window.start_s, window.end_s, cpu_seconds)
        point = summarize_point(index, load, records, probe.series, timing, slos=config.slos)
        return point, records


def _add_idle_figures(points: list[PointResult], idle_watts: float | None) -> None:
    previous = None
    for point in points:
        energy = point.energy
        if energy is None:
            continue
        if idle_watts is not None and energy.window_output_tokens:
            energy.idle_watts = idle_watts
            above = energy.metered_joules - idle_watts * energy.window_s
            energy.joules_per_output_token_above_idle = above / energy.window_output_tokens
        if previous is not None:
            extra_tokens_per_s = (energy.window_output_tokens / energy.window_s) - (
                previous.window_output_tokens / previous.window_s
            )
            if extra_tokens_per_s > 0:
                energy.marginal_joules_per_output_token = (
                    energy.mean_watts - previous.mean_watts
                ) / extra_tokens_per_s
        previous = energy


def _meter_source(points: list[PointResult]) -> str | None:
    return next((point.energy.source for point in points if point.energy), None)


def _environment(config: RunConfig, models: list[str]) -> dict:
    return {
        "harness": harness_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "target": config.url,
        "served_models": models,
    }


def run_sync(config: RunConfig, console: Console | None = None) -> RunResult:
    """`run` on a uvloop event loop: its timers and sockets cost the client less CPU than asyncio's."""
    return uvloop.run(run(config, console))


async def run(config: RunConfig, console: Console | None = None) -> RunResult:
    """Run every load point of `config` (stopping a sweep at saturation) and return the results."""
    console = console or Console(stderr=True)
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_s, connect=10.0)
    # No connection limit: a cap would queue requests inside the client, invisibly to the schedule.
    connector = aiohttp.TCPConnector(limit=0)
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as session:
        models = await _served_models(session, config.url)
        runner = Runner(config, session, console)
        idle_probe = MetricsProbe(session, config.url, config.scrape_period_s)
        idle_before = await _idle_watts(idle_probe, config.idle_s)
        points, records, stopped = [], [], None
        for index, load in enumerate(config.loads()):
            point, point_records = await runner.run_point(index, load)
            points.append(point)
            records.extend(point_records)
            if config.stop_at_saturation and (
                stopped := stop_reason(point, points[-2] if len(points) > 1 else None)
            ):
                break
        idle_after = await _idle_watts(idle_probe, config.idle_s)
    idle = [w for w in (idle_before, idle_after) if w is not None]
    _add_idle_figures(points, sum(idle) / len(idle) if idle else None)
    return RunResult(
        created=created,
        config=config.model_dump(mode="json"),
        environment={**_environment(config, models), "meter_source": _meter_source(points)},
        slos=config.slos,
        idle_watts_before=idle_before,
        idle_watts_after=idle_after,
        points=points,
        pareto=pareto_front(points),
        best=best_point(points),
        stopped_because=stopped if stopped and len(points) < len(config.loads()) else None,
        requests=records if config.keep_requests else None,
    )
