"""Figures, targets and the Markdown page of the energy-policy benchmark (`benchmarks.energy_policy`).

Pure functions over the harness's `RunResult`, two `/v1/energy` documents (before and after a run) and
the CPU time of the server's processes, so they are tested without a server.

Which figure judges what:
- per-tier J/token: the server's attribution as each request's `usage.energy.joules` carries it, summed
  over the measured window's requests of the tier and divided by their output tokens (the harness's
  per-tier report); `/v1/energy`'s per-tier totals over the whole run are shown beside it as a check;
- overall J/token: metered joules over the measured window per output token (the server's meter, idle
  stretches included): what the machine spent, not what was attributed to requests;
- SLOs: judged on the default tier's requests (flex has no latency objective), over the measured window
  and over consecutive `SLO_WINDOW_S` slices of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from loadtest.aggregate import distribution, ratio
from loadtest.results import Distribution, PointResult, RequestRecord, RunResult, TierSummary

DEFAULT_TIER = "default"
FLEX_TIER = "flex"
SLO_WINDOW_S = 30.0  # slices of the measured window the SLOs are also judged on
MIN_WINDOW_REQUESTS = 10  # a slice with fewer default-tier requests is too small to judge
# Targets: flex J/token at least this far below default; default TTFT p90 at most this ratio of its
# flex-off figure; the governor's overall J/token at least this far below the fixed configuration's.
FLEX_SAVING = 0.25
TTFT_RATIO = 1.10
GOVERNOR_SAVING = 0.15


@dataclass(frozen=True)
class Configuration:
    """One server configuration and the tier mix the harness sends it."""

    name: str
    title: str
    service_tier: str  # the harness's --service-tier
    server_flags: tuple[str, ...] = ()


def configurations(slo_ttft_s: float, slo_itl_s: float) -> list[Configuration]:
    """The runs, in order: each pair compared runs back to back; flex-off and governor-off are the same."""
    governor = (
        "--energy-policy",
        "slo",
        "--slo-ttft-p90",
        f"{slo_ttft_s:g}",
        "--slo-itl-p90",
        f"{slo_itl_s:g}",
    )
    return [
        Configuration("flex-off", "every request on the default tier", DEFAULT_TIER),
        Configuration("mixed", "50 % flex, 50 % default", "flex=1,default=1"),
        Configuration("governor-on", "every request default, --energy-policy slo", DEFAULT_TIER, governor),
        Configuration("governor-off", "every request default, --energy-policy off", DEFAULT_TIER, ()),
        # What the slo policy's short engine busy-wait saves on its own, without the governor's batching.
        Configuration(
            "spin-only",
            "every request default, --energy-policy off --engine-spin-seconds 0.02",
            DEFAULT_TIER,
            ("--engine-spin-seconds", "0.02"),
        ),
    ]


def _delta(after: dict, before: dict, key: str) -> float:
    return float(after.get(key) or 0.0) - float(before.get(key) or 0.0)


def server_energy(before: dict, after: dict) -> dict:
    """What `/v1/energy` says about one run: the difference of its documents before and after it."""
    metered_s = _delta(after, before, "metered_seconds")
    tokens = _delta(after, before, "output_tokens")
    tiers = {}
    for tier, group in after.get("tiers", {}).items():
        earlier = before.get("tiers", {}).get(tier, {})
        tier_tokens = _delta(group, earlier, "output_tokens")
        requests = _delta(group, earlier, "requests")
        tiers[tier] = {
            "requests": round(requests),
            "output_tokens": round(tier_tokens),
            "joules_per_output_token": ratio(_delta(group, earlier, "joules"), tier_tokens),
            "dynamic_joules_per_output_token": ratio(_delta(group, earlier, "dynamic_joules"), tier_tokens),
            "mean_flex_lane_wait_s": ratio(_delta(group, earlier, "flex_lane_wait_seconds"), requests),
        }
    return {
        "source": after.get("source"),
        "metered_joules": _delta(after, before, "joules_since_start"),
        "attributed_joules": _delta(after, before, "attributed_joules"),
        "idle_joules": _delta(after, before, "idle_joules"),
        "metered_seconds": metered_s,
        "busy_share": ratio(_delta(after, before, "busy_seconds"), metered_s),
        "mean_watts": ratio(_delta(after, before, "joules_since_start"), metered_s),
        "idle_floor_watts": after.get("idle_floor_watts"),
        "output_tokens": round(tokens),
        "attributed_joules_per_output_token": ratio(_delta(after, before, "attributed_joules"), tokens),
        "tiers": tiers,
    }


def _tier(point: PointResult, name: str) -> TierSummary | None:
    return next((tier for tier in point.tiers if tier.service_tier == name), None)


def _percentile(dist: Distribution, percentile: str) -> float | None:
    return getattr(dist, percentile)


def slo_violations(
    default_tier: TierSummary | None,
    records: list[RequestRecord],
    slos: dict[str, float],
    window: tuple[float, float],
) -> dict:
    """The default tier's SLO verdicts: over the measured window, per slice of it, and per request.

    Args:
        default_tier: The harness's figures of the default tier (None: no default request).
        records: Every request of the point (only measured, default-tier ones count).
        slos: e.g. `{"ttft_p90": 0.5, "itl_p90": 0.05}`, seconds.
        window: The measured window (start, end), seconds from the point's start.

    Returns:
        `violated`: the SLOs whose percentile over the window is above its limit; `windows` and
        `windows_violated`: slices judged and those with any SLO above its limit; `requests_outside`:
        requests whose own TTFT or mean ITL is above a limit (a p90 objective allows 10 % of them).
    """
    if default_tier is None:
        return {
            "violated": sorted(slos),
            "windows": 0,
            "windows_violated": 0,
            "requests_outside": 0,
            "requests": 0,
        }
    whole = {"ttft": default_tier.ttft_s, "itl": default_tier.itl_s}
    violated = [key for key, limit in slos.items() if _over(whole, key, limit)]
    measured = [
        r for r in records if r.phase == "measure" and (r.service_tier or DEFAULT_TIER) == DEFAULT_TIER
    ]
    ok = [r for r in measured if r.ok]
    start, end = window
    windows = windows_violated = 0
    slice_start = start
    while slice_start + SLO_WINDOW_S / 2 <= end:
        inside = [r for r in ok if slice_start <= r.scheduled_at_s < min(end, slice_start + SLO_WINDOW_S)]
        slice_start += SLO_WINDOW_S
        if len(inside) < MIN_WINDOW_REQUESTS:
            continue
        windows += 1
        figures = {
            "ttft": distribution([r.ttft_s for r in inside if r.ttft_s is not None]),
            "itl": distribution([gap for r in inside for gap in r.itl_s]),
        }
        windows_violated += any(_over(figures, key, limit) for key, limit in slos.items())
    outside = sum(not r.ok or _request_over(r, slos) for r in measured)
    return {
        "violated": violated,
        "windows": windows,
        "windows_violated": windows_violated,
        "requests_outside": outside,
        "requests": len(measured),
    }


def _over(distributions: dict[str, Distribution], key: str, limit: float) -> bool:
    metric, _, percentile = key.partition("_")
    if metric not in distributions:
        return False  # an SLO on a metric not judged here (tpot, e2e)
    value = _percentile(distributions[metric], percentile)
    return value is None or value > limit


def _request_over(record: RequestRecord, slos: dict[str, float]) -> bool:
    own = {"ttft": record.ttft_s, "itl": record.tpot_s}
    for key, limit in slos.items():
        value = own.get(key.partition("_")[0])
        if value is not None and value > limit:
            return True
    return False


def _tier_figures(tier: TierSummary, server: dict) -> dict:
    return {
        "requests": tier.requests,
        "ok": tier.ok,
        "output_tokens": tier.output_tokens,
        "joules_per_output_token": tier.joules_per_output_token,
        "server_joules_per_output_token": server.get("joules_per_output_token"),
        "server_dynamic_joules_per_output_token": server.get("dynamic_joules_per_output_token"),
        "mean_flex_lane_wait_s": server.get("mean_flex_lane_wait_s"),
        "ttft_p50_s": tier.ttft_s.p50,
        "ttft_p90_s": tier.ttft_s.p90,
        "itl_p90_s": tier.itl_s.p90,
        "e2e_p90_s": tier.e2e_s.p90,
    }


def run_figures(
    result: RunResult, energy_before: dict, energy_after: dict, cpu_cores: dict[str, float]
) -> dict:
    """Every figure of one configuration's run (its single load point)."""
    point = result.points[0]
    server = server_energy(energy_before, energy_after)
    config = result.config
    window = (config["warmup_s"], config["duration_s"] - config["cooldown_s"])
    energy = point.energy
    return {
        "offered_rps": point.offered_rps,
        "answered_rps": point.request_throughput,
        "output_tokens_per_s": point.output_throughput,
        "measured_requests": point.measured,
        "errors": point.errors,
        "validity": point.validity.verdict,
        "saturated": point.validity.saturated,
        "failed_checks": [c.name for c in point.validity.checks if c.status == "fail"],
        "metered_joules_per_output_token": None if energy is None else energy.joules_per_output_token,
        "mean_watts": None if energy is None else energy.mean_watts,
        "energy_source": None if energy is None else energy.source,
        "ttft_p90_s": point.ttft_s.p90,
        "itl_p90_s": point.itl_s.p90,
        "server": {key: value for key, value in server.items() if key != "tiers"},
        "cpu_cores": cpu_cores,
        "tiers": {
            tier.service_tier: _tier_figures(tier, server["tiers"].get(tier.service_tier, {}))
            for tier in point.tiers
        },
        "slo": slo_violations(_tier(point, DEFAULT_TIER), result.requests or [], result.slos, window),
    }


def _target(name: str, value: float | None, limit: float, passed: bool, detail: str) -> dict:
    return {"target": name, "value": value, "limit": limit, "pass": passed, "detail": detail}


def _valid(*runs: dict) -> bool:
    return all(run["validity"] != "fail" and not run["saturated"] for run in runs)


def judge(runs: dict[str, dict]) -> list[dict]:
    """Pass or fail of each target, from the figures of the four runs (see `configurations`)."""
    mixed, flex_off = runs["mixed"], runs["flex-off"]
    on, off = runs["governor-on"], runs["governor-off"]
    default = mixed["tiers"].get(DEFAULT_TIER, {}).get("joules_per_output_token")
    flex = mixed["tiers"].get(FLEX_TIER, {}).get("joules_per_output_token")
    saving = 1 - flex / default if flex is not None and default else None
    ttft_mixed = mixed["tiers"].get(DEFAULT_TIER, {}).get("ttft_p90_s")
    ttft_alone = flex_off["tiers"].get(DEFAULT_TIER, {}).get("ttft_p90_s")
    ttft_ratio = ttft_mixed / ttft_alone if ttft_mixed is not None and ttft_alone else None
    jpt_on, jpt_off = on["metered_joules_per_output_token"], off["metered_joules_per_output_token"]
    governor_saving = 1 - jpt_on / jpt_off if jpt_on is not None and jpt_off else None
    new_violations = sorted(set(on["slo"]["violated"]) - set(off["slo"]["violated"]))
    slo_ok = not new_violations and on["slo"]["windows_violated"] <= off["slo"]["windows_violated"]
    return [
        _target(
            "flex J/token at least 25 % below default J/token (mixed run)",
            saving,
            FLEX_SAVING,
            saving is not None and saving >= FLEX_SAVING and _valid(mixed),
            f"flex {_fmt(flex)} J/token, default {_fmt(default)} J/token",
        ),
        _target(
            "default-tier TTFT p90 within 10 % of the flex-off run (ratio at most 1.10)",
            ttft_ratio,
            TTFT_RATIO,
            ttft_ratio is not None and ttft_ratio <= TTFT_RATIO and _valid(mixed, flex_off),
            f"mixed {_ms(ttft_mixed)}, flex off {_ms(ttft_alone)}",
        ),
        _target(
            "governor: overall (metered) J/token at least 15 % below the fixed configuration's",
            governor_saving,
            GOVERNOR_SAVING,
            governor_saving is not None and governor_saving >= GOVERNOR_SAVING and _valid(on, off),
            f"on {_fmt(jpt_on)} J/token, off {_fmt(jpt_off)} J/token",
        ),
        _target(
            "governor: no SLO violation the fixed configuration does not also have",
            float(on["slo"]["windows_violated"]),
            float(off["slo"]["windows_violated"]),
            slo_ok and _valid(on, off),
            f"violated over the window: on {on['slo']['violated'] or 'none'}, off "
            f"{off['slo']['violated'] or 'none'}; {SLO_WINDOW_S:g}-s slices violated: on "
            f"{on['slo']['windows_violated']}/{on['slo']['windows']}, off "
            f"{off['slo']['windows_violated']}/{off['slo']['windows']}",
        ),
    ]


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.1f} ms"


def _pct(share: float | None) -> str:
    return "—" if share is None else f"{share * 100:.1f} %"


def markdown(report: dict) -> str:
    """The report as a Markdown page: settings, one row per run and tier, the targets."""
    settings = report["settings"]
    lines = [
        "# Energy-policy benchmark",
        "",
        f"`{report['command']}` — {report['created']}, {report['machine']['cpus']} CPUs, "
        f"energy meter `{settings['energy_meter']}` (CPU time × watts per core: an estimate, not a "
        "measurement).",
        "",
        f"Load: open-loop Poisson at {settings['rate']:g} req/s, {settings['duration_s']:g} s per run "
        f"(measured window {settings['duration_s'] - settings['warmup_s'] - settings['cooldown_s']:g} s), "
        f"seed {settings['seed']}, {settings['input_len']} prompt words, {settings['output_len']} output "
        f"tokens (ignore_eos). SLOs (default tier): {settings['slo']}.",
        "",
        "| run | offered req/s | engine busy | watts | metered J/token | attributed J/token | TTFT p90 (all) "
        "| ITL p90 (all) | SLO violated | slices violated | validity |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for name, run in report["runs"].items():
        server, slo = run["server"], run["slo"]
        lines.append(
            f"| {name} | {_fmt(run['offered_rps'], 2)} | {_pct(server['busy_share'])} | "
            f"{_fmt(server['mean_watts'], 1)} | {_fmt(run['metered_joules_per_output_token'])} | "
            f"{_fmt(server['attributed_joules_per_output_token'])} | {_ms(run['ttft_p90_s'])} | "
            f"{_ms(run['itl_p90_s'])} | {', '.join(slo['violated']) or 'none'} | "
            f"{slo['windows_violated']}/{slo['windows']} | {run['validity']}"
            f"{' (saturated)' if run['saturated'] else ''} |"
        )
    lines += [
        "",
        "| run | tier | requests | J/token (usage) | J/token (/v1/energy) | dynamic J/token | TTFT p50 "
        "| TTFT p90 | ITL p90 | e2e p90 | mean flex-lane wait |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in report["runs"].items():
        for tier, figures in run["tiers"].items():
            wait = figures["mean_flex_lane_wait_s"]
            lines.append(
                f"| {name} | {tier} | {figures['requests']} | {_fmt(figures['joules_per_output_token'])} | "
                f"{_fmt(figures['server_joules_per_output_token'])} | "
                f"{_fmt(figures['server_dynamic_joules_per_output_token'])} | {_ms(figures['ttft_p50_s'])} | "
                f"{_ms(figures['ttft_p90_s'])} | {_ms(figures['itl_p90_s'])} | {_ms(figures['e2e_p90_s'])} | "
                f"{'—' if wait is None else f'{wait:.2f} s'} |"
            )
    lines += [
        "",
        "| run | API process | engine core | engine worker | total (cores) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, run in report["runs"].items():
        cores = run["cpu_cores"]
        lines.append(
            f"| {name} | {_fmt(cores.get('api'), 2)} | {_fmt(cores.get('engine_core'), 2)} | "
            f"{_fmt(cores.get('worker'), 2)} | {_fmt(sum(cores.values()), 2)} |"
        )
    lines += ["", "| target | value | limit | result | figures |", "|---|---:|---:|---|---|"]
    for target in report["targets"]:
        lines.append(
            f"| {target['target']} | {_fmt(target['value'], 3)} | {target['limit']:g} | "
            f"{'pass' if target['pass'] else 'FAIL'} | {target['detail']} |"
        )
    return "\n".join(lines) + "\n"


def calibration_markdown(report: dict) -> str:
    """The calibration as a Markdown table: busy share, watts, J/token and latency against the rate."""
    shared = report["settings"]
    lines = [
        "# Energy-policy benchmark: calibration",
        "",
        f"`{report['command']}` — {report['created']}; every request on the default tier, "
        f"{shared['duration_s']:g} s per rate, energy meter `{shared['energy_meter']}` "
        "(an estimate from CPU time).",
        "",
        "| offered req/s | engine busy | watts | metered J/token | TTFT p90 | ITL p90 | validity |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for point in report["points"]:
        server = point["server"]
        lines.append(
            f"| {point['offered_rps']:.2f} | {server['busy_share'] * 100:.0f} % | "
            f"{server['mean_watts']:.1f} | "
            f"{point['metered_joules_per_output_token']:.4f} | {point['ttft_p90_s'] * 1000:.1f} ms | "
            f"{point['itl_p90_s'] * 1000:.1f} ms | {point['validity']} |"
        )
    return "\n".join(lines) + "\n"
