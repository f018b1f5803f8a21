"""The pure parts of the batch-energy benchmark (`benchmarks.batch_energy`): its inputs, figures and page.

Pure functions over the harness's `RunResult`, `/v1/energy` documents read before and after a run, batch
objects and the lines of a batch's output file, so they are tested without a server.

The same work both ways: the harness builds its requests with `loadtest.workload.build_requests` from
the seed and the number of arrivals its Poisson schedule holds (`loadtest.arrivals.schedule`); the batch
input is made from the very same requests, each without what only a stream has (`stream`,
`stream_options`) and without `service_tier` (the server runs every batch line in the flex tier).

Which figure says what:
- metered J/token: the meter's joules over the run (`/v1/energy` before and after: idle stretches
  included) per output token the server made in it: what the machine spent on the work;
- usage J/token: the sum of each request's `usage.energy.joules` per output token: what the server
  attributed to the requests (the idle floor shared among the requests that ran in it);
- TTFT ratio: the default tier's TTFT p90 beside a batch over its figure alone, each from the harness;
  with several rounds, the median of the rounds' ratios; beside it, the same over the requests the harness
  sent on schedule (a client that froze sends what it owes in one burst the schedule never held).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np

from benchmarks.energy_policy_report import DEFAULT_TIER, TTFT_RATIO, server_energy
from loadtest.aggregate import distribution, ratio
from loadtest.arrivals import schedule
from loadtest.results import RunResult
from loadtest.validity import LAG_P99_WARN_S
from loadtest.workload import RequestSpec, WorkloadConfig

BATCH_ENDPOINT = "/v1/chat/completions"
STREAM_ONLY = ("stream", "stream_options", "service_tier")  # left out of a batch line's body


def workload(model: str, input_len: int, output_len: int) -> WorkloadConfig:
    """The harness's workload for `--api chat --service-tier default --ignore-eos` and these lengths."""
    return WorkloadConfig(
        api="chat",
        input_len=str(input_len),
        output_len=str(output_len),
        models=model,
        service_tiers=DEFAULT_TIER,
        ignore_eos=True,
    )


def schedule_duration(rate: float, requests: int, seed: int) -> float:
    """A `--duration` (3 decimals) whose Poisson schedule at `rate` and `seed` holds exactly `requests`.

    The schedule's offsets do not depend on the duration (it only cuts them), so the duration halfway
    between the last arrival kept and the first one left out gives the count.
    """
    if requests < 1:
        raise ValueError(f"requests must be at least 1, got {requests}")
    horizon = 2 * requests / rate + 10
    while len(offsets := schedule("poisson", rate, horizon, seed)) <= requests:
        horizon *= 2
    duration = round(float(offsets[requests - 1] + offsets[requests]) / 2, 3)
    if len(schedule("poisson", rate, duration, seed)) != requests:  # two arrivals within 1 ms
        raise ValueError(f"no 3-decimal duration holds exactly {requests} arrivals; try another seed")
    return duration


def batch_input(specs: Iterable[RequestSpec]) -> bytes:
    """A batch input file (JSON lines) holding the harness's requests, in order."""
    lines = []
    for index, spec in enumerate(specs):
        body = {key: value for key, value in spec.body().items() if key not in STREAM_ONLY}
        line = {"custom_id": f"request-{index}", "method": "POST", "url": BATCH_ENDPOINT, "body": body}
        lines.append(json.dumps(line, ensure_ascii=False) + "\n")
    return "".join(lines).encode()


def per_token(joules: float | None, tokens: float | None) -> float | None:
    """Joules per output token; None without joules or tokens."""
    return None if joules is None else ratio(joules, tokens or 0)


def usage_totals(answers: Iterable[tuple[float | None, int | None]]) -> dict:
    """Requests answered, output tokens and Σ usage.energy.joules of (joules, output tokens) pairs."""
    requests = tokens = 0
    joules = 0.0
    for energy, completion in answers:
        requests += 1
        tokens += completion or 0
        joules += energy or 0.0
    return {
        "answered": requests,
        "usage_output_tokens": tokens,
        "usage_joules": joules,
        "usage_joules_per_output_token": per_token(joules, tokens),
    }


def output_answers(lines: Iterable[dict]) -> list[tuple[float | None, int | None]]:
    """(usage.energy.joules, completion tokens) of each answered line of a batch output file."""
    answers = []
    for line in lines:
        response = line.get("response") or {}
        if line.get("error") or response.get("status_code") != 200:
            continue
        usage = (response.get("body") or {}).get("usage") or {}
        answers.append(((usage.get("energy") or {}).get("joules"), usage.get("completion_tokens")))
    return answers


def metered(before: dict, after: dict, wall_s: float, cores: dict[str, float]) -> dict:
    """What the meter says about one run: `/v1/energy` before and after it, its wall time, CPU cores used."""
    server = server_energy(before, after)
    return {
        "wall_s": wall_s,
        "metered_joules": server["metered_joules"],
        "output_tokens": server["output_tokens"],
        "metered_joules_per_output_token": per_token(server["metered_joules"], server["output_tokens"]),
        "idle_joules": server["idle_joules"],
        "busy_share": server["busy_share"],
        "mean_watts": server["mean_watts"],
        "energy_source": server["source"],
        "cpu_cores": cores,
    }


def live_run(result: RunResult, meter: dict) -> dict:
    """The live side of the same work: the harness's requests, and `metered` over its run."""
    records = result.requests or []
    answered = [(r.energy_joules, r.completion_tokens) for r in records if r.ok]
    return {
        "requests": len(records),
        **usage_totals(answered),
        "work_s": result.points[0].duration_s,  # first send to last answer
        **meter,
    }


def batch_run(batch: dict, lines: list[dict], meter: dict) -> dict:
    """The batch side of the same work: its output file, its own energy totals, and `metered` over it."""
    counts = batch.get("request_counts") or {}
    started, ended = batch.get("in_progress_at"), batch.get("completed_at")
    return {
        "requests": counts.get("total"),
        "failed": counts.get("failed"),
        **usage_totals(output_answers(lines)),
        "work_s": None if started is None or ended is None else ended - started,  # whole seconds
        "status": batch.get("status"),
        "batch_energy": batch.get("energy"),
        **meter,
    }


def same_work(live: dict, batch: dict, live_duration_s: float) -> dict:
    """Both sides of the same work and how the batch's J/token compares with live (ratio below 1: less)."""
    metered = [run["metered_joules_per_output_token"] for run in (batch, live)]
    usage = [run["usage_joules_per_output_token"] for run in (batch, live)]
    metered_ratio = None if None in metered or not metered[1] else metered[0] / metered[1]
    usage_ratio = None if None in usage or not usage[1] else usage[0] / usage[1]
    return {
        "live_duration_s": live_duration_s,
        "live": live,
        "batch": batch,
        "metered_ratio": metered_ratio,
        "usage_ratio": usage_ratio,
        "batch_below_live": metered_ratio is not None and metered_ratio < 1,
    }


def on_schedule(result: RunResult) -> dict:
    """The default tier's TTFT over its measured, answered requests the harness sent on schedule."""
    ttfts = [
        record.ttft_s
        for record in result.requests or []
        if record.phase == "measure"
        and record.ok
        and record.ttft_s is not None
        and record.service_tier == DEFAULT_TIER
        and record.dispatched_at_s - record.scheduled_at_s <= LAG_P99_WARN_S
    ]
    ttft = distribution(ttfts)
    return {
        "lag_limit_s": LAG_P99_WARN_S,
        "requests": ttft.count,
        "ttft_p50_s": ttft.p50,
        "ttft_p90_s": ttft.p90,
    }


def steal_share(before: Any, after: Any) -> float | None:
    """The share of CPU time the virtual machine's host took (steal) between two `psutil.cpu_times()`."""
    if not hasattr(before, "steal"):
        return None
    total = sum(after) - sum(before)
    return ratio(after.steal - before.steal, total) if total > 0 else None


def ttft_ratio(with_batch: float | None, alone: float | None) -> float | None:
    """The default tier's TTFT p90 beside the batch over its figure alone."""
    return None if with_batch is None or not alone else with_batch / alone


def beside_batch(alone: dict, with_batch: dict, progress: dict) -> dict:
    """The stream alone and beside the batch (`run_figures`), the TTFT ratio, the batch's progress."""
    ttft = [run["tiers"].get(DEFAULT_TIER, {}).get("ttft_p90_s") for run in (with_batch, alone)]
    value = ttft_ratio(*ttft)
    timely = [(run.get("on_schedule") or {}).get("ttft_p90_s") for run in (with_batch, alone)]
    return {
        "alone": alone,
        "with_batch": with_batch,
        "progress": progress,
        "ttft_ratio": value,
        "ttft_target_met": _within_target(value),
        "ttft_ratio_on_schedule": ttft_ratio(*timely),
    }


def beside_rounds(rounds: list[dict]) -> dict:
    """Rounds of `beside_batch`, alone and with the batch in turn; the verdict is on the median ratio.

    One p90 from a couple of hundred requests on a small shared machine moves with whatever else ran in
    those seconds (a stall in either run swings the ratio either way); the median of several rounds'
    ratios does not rest on one such stretch.
    """
    ratios = [one["ttft_ratio"] for one in rounds]
    timely = [one.get("ttft_ratio_on_schedule") for one in rounds]
    return {
        "rounds": rounds,
        "ttft_ratios": ratios,
        "ttft_ratio": _median(ratios),
        "ttft_target_met": _within_target(_median(ratios)),
        "ttft_ratios_on_schedule": timely,
        "ttft_ratio_on_schedule": _median(timely),
        "ttft_target_met_on_schedule": _within_target(_median(timely)),
    }


def _median(values: list[float | None]) -> float | None:
    return None if None in values or not values else float(np.median(values))


def _within_target(ratio_value: float | None) -> bool:
    return ratio_value is not None and ratio_value <= TTFT_RATIO


def batch_progress(at_start: dict, at_end: dict, seconds: float, samples: list[tuple[float, int]]) -> dict:
    """What the batch did while the live stream ran: lines answered, rate, whether it outlasted the run."""
    first = (at_start.get("request_counts") or {}).get("completed", 0)
    last = (at_end.get("request_counts") or {}).get("completed", 0)
    tokens = [(batch.get("energy") or {}).get("output_tokens") for batch in (at_start, at_end)]
    rates = np.diff([count for _, count in samples]) / np.maximum(np.diff([t for t, _ in samples]), 1e-9)
    return {
        "lines": (at_end.get("request_counts") or {}).get("total"),
        "completed_at_start": first,
        "completed_at_end": last,
        "lines_per_s": ratio(last - first, seconds),
        "output_tokens_per_s": None if None in tokens else ratio(tokens[1] - tokens[0], seconds),
        "min_lines_per_s_sampled": float(rates.min()) if rates.size else None,
        "lasted_the_run": at_end.get("status") == "in_progress",
        "samples": samples,
    }


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.1f} ms"


def _pct(share: float | None) -> str:
    return "—" if share is None else f"{share * 100:.0f} %"


def _same_work_lines(report: dict) -> list[str]:
    work = report["same_work"]
    settings = report["settings"]
    lines = [
        "## The same work, live and as a batch",
        "",
        f"{settings['requests']} chat requests ({settings['input_len']} prompt words, "
        f"{settings['output_len']} output tokens, ignore_eos, seed {settings['seed']}): live on the default "
        f"tier, open-loop Poisson at {settings['rate']:g} req/s (`--duration {work['live_duration_s']:g}` "
        "holds exactly that many arrivals), then the same requests as one batch (flex tier), each on a "
        "fresh server.",
        "",
        "| run | answered | output tokens | metered J | metered J/token | Σ usage J/token | idle J | "
        "engine busy | mean watts | wall s | work s | load before |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("live", "batch"):
        run = work[name]
        lines.append(
            f"| {name} | {run['answered']}/{run['requests']} | {run['output_tokens']} | "
            f"{_fmt(run['metered_joules'], 1)} | {_fmt(run['metered_joules_per_output_token'])} | "
            f"{_fmt(run['usage_joules_per_output_token'])} | {_fmt(run['idle_joules'], 1)} | "
            f"{_pct(run['busy_share'])} | {_fmt(run['mean_watts'], 1)} | {_fmt(run['wall_s'], 1)} | "
            f"{_fmt(run['work_s'], 1)} | {_fmt(run.get('load_average'), 2)} |"
        )
    energy = work["batch"].get("batch_energy") or {}
    lines += [
        "",
        f"Batch J/token below live: metered **{_fmt(work['metered_ratio'], 3)}×** live, Σ usage "
        f"**{_fmt(work['usage_ratio'], 3)}×** live ({'yes' if work['batch_below_live'] else 'NO'}). "
        f"The batch object's own `energy`: {_fmt(energy.get('joules'), 1)} J over "
        f"{energy.get('output_tokens', '—')} tokens, {_fmt(energy.get('joules_per_output_token'))} J/token.",
        "",
    ]
    return lines


def _beside_lines(report: dict) -> list[str]:
    beside = report["beside_batch"]
    settings = report["settings"]
    rounds = beside["rounds"]
    lines = [
        "## Live traffic beside a large batch",
        "",
        f"Default tier, open-loop Poisson at {settings['rate']:g} req/s for {settings['duration_s']:g} s "
        f"(first {settings['warmup_s']:g} s and last {settings['cooldown_s']:g} s left out), same seed, "
        f"alone and with a batch of {rounds[0]['progress']['lines']} lines running (started before the "
        f"stream), each on a fresh server; {len(rounds)} round(s), alone then with the batch in each.",
        "",
        "| round | run | requests | TTFT p50 | TTFT p90 | sent on schedule | their TTFT p90 | ITL p90 "
        "| e2e p90 | live usage J/token | metered J/token (all tokens) | engine busy | load before "
        "| host steal | harness checks failed |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for number, one in enumerate(rounds, 1):
        for name in ("alone", "with_batch"):
            run = one[name]
            tier = run["tiers"].get(DEFAULT_TIER, {})
            server = run["server"]
            timely = run.get("on_schedule") or {}
            lines.append(
                f"| {number} | {name.replace('_', ' ')} | {tier.get('requests', '—')} | "
                f"{_ms(tier.get('ttft_p50_s'))} | {_ms(tier.get('ttft_p90_s'))} | "
                f"{timely.get('requests', '—')} | {_ms(timely.get('ttft_p90_s'))} | "
                f"{_ms(tier.get('itl_p90_s'))} | {_ms(tier.get('e2e_p90_s'))} | "
                f"{_fmt(tier.get('joules_per_output_token'))} | "
                f"{_fmt(per_token(server['metered_joules'], server['output_tokens']))} | "
                f"{_pct(server['busy_share'])} | {_fmt(run.get('load_average'), 2)} | "
                f"{_pct(run.get('host_steal_share'))} | "
                f"{', '.join(run.get('failed_checks') or []) or 'none'} |"
            )
    ratios = ", ".join(_fmt(value, 3) for value in beside["ttft_ratios"])
    timely = ", ".join(_fmt(value, 3) for value in beside.get("ttft_ratios_on_schedule") or [])
    limit_ms = LAG_P99_WARN_S * 1000
    lines += [
        "",
        f"TTFT p90 with the batch / alone, per round: {ratios}; median **{_fmt(beside['ttft_ratio'], 3)}** "
        f"(target ≤ {TTFT_RATIO:g}: {'met' if beside['ttft_target_met'] else 'NOT met'}).",
        "",
        f"Over the requests the harness sent on schedule (at most {limit_ms:g} ms late, its own schedule-lag "
        f"limit), per round: {timely or '—'}; median **{_fmt(beside.get('ttft_ratio_on_schedule'), 3)}** "
        f"(target ≤ {TTFT_RATIO:g}: {'met' if beside.get('ttft_target_met_on_schedule') else 'NOT met'}). "
        "A client that froze (its CPU taken) sends what it owes in one burst the schedule never held; "
        "the requests it sent late are left out of both runs alike.",
        "",
        "Load before: the 1-minute load average just before the run's server started (other work on the "
        "machine shows in it, and so does the run before, whose server has just stopped). Host steal: the "
        "share of the machine's CPU time its virtual machine's host took during the run. Beside a batch "
        "the harness's token and energy reconciliation checks fail by "
        "design: the server's counters hold the batch's tokens and joules too.",
        "",
    ]
    for number, one in enumerate(rounds, 1):
        progress = one["progress"]
        lines += [
            f"Round {number}, the batch during the live run: {progress['completed_at_start']} → "
            f"{progress['completed_at_end']} of {progress['lines']} lines answered "
            f"({_fmt(progress['lines_per_s'], 2)} lines/s, {_fmt(progress['output_tokens_per_s'], 1)} output "
            f"tokens/s; slowest {settings['sample_s']:g}-s sample "
            f"{_fmt(progress['min_lines_per_s_sampled'], 2)} lines/s); still running when the stream "
            f"ended: {'yes' if progress['lasted_the_run'] else 'NO'}.",
            "",
        ]
    return lines


def markdown(report: dict) -> str:
    """The report as a Markdown page: both measurements, their figures and verdicts."""
    settings = report["settings"]
    lines = [
        "# Batch-energy benchmark",
        "",
        f"`{report['command']}` — {report['created']}, {report['machine']['cpus']} CPUs, 1-minute load "
        f"average {_fmt(report['load_average_at_start'], 2)} at the start; energy meter "
        f"`{settings['energy_meter']}` (an estimate from CPU time, not a measurement). Server: the "
        f"embedded model, `--max-num-seqs {settings['max_num_seqs']}`, batch lines at most "
        f"`--batch-max-in-flight` at once (default: half of it); more server flags: "
        f"`{settings['server_flags'] or 'none'}`.",
        "",
        *(_same_work_lines(report) if report["same_work"] else []),
        *_beside_lines(report),
    ]
    return "\n".join(lines).rstrip() + "\n"
