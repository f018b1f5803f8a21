"""Turn the GPU A/B benchmark's runs into per-run records, wattserve/vLLM ratios, verdicts and Markdown."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from loadtest.aggregate import ratio

__all__ = [
    "SERVERS",
    "Comparison",
    "Criteria",
    "compare",
    "counter_deltas",
    "counter_totals",
    "markdown",
    "meter_source",
    "run_record",
]

SERVERS = ("wattserve", "vllm")
LABELS = {"wattserve": "wattserve", "vllm": "vLLM"}
# All the energy wattserve's own meter saw (attributed + idle): the figure NVML is compared with.
METERED_ENERGY = "wattserve_metered_energy_joules_total"


@dataclass(frozen=True)
class Criteria:
    """What wattserve must reach against vLLM at every concurrency (ratios of medians over rounds)."""

    min_throughput_ratio: float = 1.00
    max_ttft_p50_ratio: float = 0.90


def _wattserve_families(metrics_text: str) -> Iterator[Metric]:
    # Only our lines go to the parser: vLLM's part of the page is large and of no interest here.
    ours = [
        line
        for line in metrics_text.splitlines()
        if line.startswith("wattserve_") or (line.startswith("# ") and " wattserve_" in line)
    ]
    return text_string_to_metric_families("\n".join(ours) + "\n")


def counter_totals(metrics_text: str) -> dict[str, float]:
    """Each `wattserve_*_total` counter of a Prometheus `/metrics` page, summed over its labels.

    Args:
        metrics_text: The page, in Prometheus text format (vLLM's own metrics may be on it too).

    Returns:
        Counter sample name -> value; empty when the page has no wattserve counters.
    """
    totals: dict[str, float] = {}
    for family in _wattserve_families(metrics_text):
        if family.type != "counter":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def meter_source(metrics_text: str) -> str | None:
    """The `source` of wattserve's energy meter ("nvml", "rapl", "estimated", ...), None if not shown."""
    for family in _wattserve_families(metrics_text):
        for sample in family.samples:
            if sample.name == METERED_ENERGY and "source" in sample.labels:
                return sample.labels["source"]
    return None


def counter_deltas(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """How much each counter grew between two `counter_totals` readings (a counter new in `after` from 0)."""
    return {name: value - before.get(name, 0.0) for name, value in sorted(after.items())}


def run_record(
    *,
    server: str,
    round_index: int,
    concurrency: int,
    num_prompts: int,
    client_result: Mapping[str, Any],
    gpu_energy_j: float,
    window_s: float,
    counters_before: Mapping[str, float] | None = None,
    counters_after: Mapping[str, float] | None = None,
    energy_source: str | None = None,
) -> dict[str, Any]:
    """One measured run as the report keeps it.

    Args:
        server: "wattserve" or "vllm".
        round_index: The round the run belongs to.
        concurrency: The client's maximum number of requests in flight.
        num_prompts: Requests sent.
        client_result: The JSON result vLLM's benchmark client saved.
        gpu_energy_j: Energy of the metered GPUs over the measured window, from NVML.
        window_s: Length of the measured window (the client's run, from its first request to its result).
        counters_before: wattserve's counters at the window's start (None for vLLM).
        counters_after: wattserve's counters at the window's end.
        energy_source: wattserve's meter source (see `meter_source`).

    Returns:
        A JSON-ready record: throughput, TTFT and ITL percentiles, GPU energy, average power, J per
        output token and, for wattserve, its counters' deltas and its metered energy over NVML's.
    """
    completed = int(client_result["completed"])
    output_tokens = int(client_result.get("total_output_tokens") or 0)
    record: dict[str, Any] = {
        "server": server,
        "round": round_index,
        "concurrency": concurrency,
        "num_prompts": num_prompts,
        "completed": completed,
        "failed": int(client_result.get("failed", num_prompts - completed)),
        "output_tokens": output_tokens,
        "duration_s": client_result["duration"],
        "output_throughput_tok_s": client_result["output_throughput"],
        "ttft_p50_ms": client_result["median_ttft_ms"],
        "ttft_p99_ms": client_result["p99_ttft_ms"],
        "itl_p50_ms": client_result["median_itl_ms"],
        "itl_p99_ms": client_result["p99_itl_ms"],
        "window_s": window_s,
        "gpu_energy_j": gpu_energy_j,
        "gpu_avg_power_w": gpu_energy_j / window_s if window_s > 0 else None,
        "gpu_j_per_output_token": gpu_energy_j / output_tokens if output_tokens else None,
    }
    if counters_before is not None and counters_after is not None:
        deltas = counter_deltas(counters_before, counters_after)
        metered_j = deltas.get(METERED_ENERGY)
        record["wattserve_counter_deltas"] = deltas
        record["wattserve_metered_energy_j"] = metered_j
        record["wattserve_energy_source"] = energy_source
        record["metered_over_nvml"] = (
            metered_j / gpu_energy_j if metered_j is not None and gpu_energy_j > 0 else None
        )
    return record


def _median(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


@dataclass(frozen=True)
class Comparison:
    """Both servers at one concurrency: medians over rounds, ratios wattserve/vLLM and the verdict.

    A ratio that cannot be computed (a metric missing or zero) fails its criterion.
    """

    concurrency: int
    rounds: int
    medians: dict[str, dict[str, float | None]]  # server -> metric -> median over rounds
    failed_requests: dict[str, int]  # server -> failed requests over all rounds
    throughput_ratio: float | None
    ttft_p50_ratio: float | None
    j_per_token_ratio: float | None
    throughput_ok: bool
    ttft_ok: bool

    @property
    def passed(self) -> bool:
        """Both criteria met and every request of both servers completed."""
        return self.throughput_ok and self.ttft_ok and not any(self.failed_requests.values())


MEDIAN_METRICS = (
    "output_throughput_tok_s",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "itl_p50_ms",
    "itl_p99_ms",
    "gpu_avg_power_w",
    "gpu_j_per_output_token",
    "metered_over_nvml",
)


def compare(runs: Sequence[Mapping[str, Any]], criteria: Criteria) -> list[Comparison]:
    """Compare the servers at each concurrency the runs cover, in increasing order.

    Args:
        runs: Records from `run_record`, of both servers and any number of rounds.
        criteria: The ratios wattserve must reach.

    Returns:
        One `Comparison` per concurrency.
    """
    comparisons = []
    for concurrency in sorted({run["concurrency"] for run in runs}):
        at = {
            server: [run for run in runs if run["concurrency"] == concurrency and run["server"] == server]
            for server in SERVERS
        }
        medians = {
            server: {metric: _median(run.get(metric) for run in at[server]) for metric in MEDIAN_METRICS}
            for server in SERVERS
        }
        throughput = ratio(
            medians["wattserve"]["output_throughput_tok_s"], medians["vllm"]["output_throughput_tok_s"]
        )
        ttft = ratio(medians["wattserve"]["ttft_p50_ms"], medians["vllm"]["ttft_p50_ms"])
        comparisons.append(
            Comparison(
                concurrency=concurrency,
                rounds=min(len(at[server]) for server in SERVERS),
                medians=medians,
                failed_requests={server: sum(run["failed"] for run in at[server]) for server in SERVERS},
                throughput_ratio=throughput,
                ttft_p50_ratio=ttft,
                j_per_token_ratio=ratio(
                    medians["wattserve"]["gpu_j_per_output_token"], medians["vllm"]["gpu_j_per_output_token"]
                ),
                throughput_ok=throughput is not None and throughput >= criteria.min_throughput_ratio,
                ttft_ok=ttft is not None and ttft <= criteria.max_ttft_p50_ratio,
            )
        )
    return comparisons


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def markdown(comparisons: Sequence[Comparison], criteria: Criteria) -> str:
    """One Markdown table per concurrency, then the overall verdict.

    Args:
        comparisons: From `compare`.
        criteria: The criteria the comparisons were judged by.

    Returns:
        Markdown text ending in a newline.
    """
    lines = []
    for item in comparisons:
        watt, vllm = item.medians["wattserve"], item.medians["vllm"]
        all_completed = not any(item.failed_requests.values())
        lines += [
            f"### Concurrency {item.concurrency} (medians over {item.rounds} rounds)",
            "",
            _row("", "wattserve", "vLLM", "wattserve / vLLM", "criterion", "result"),
            "|---|---:|---:|---:|---|---|",
            _row(
                "output throughput (tok/s)",
                _fmt(watt["output_throughput_tok_s"], 1),
                _fmt(vllm["output_throughput_tok_s"], 1),
                _fmt(item.throughput_ratio, 3),
                f">= {criteria.min_throughput_ratio:.2f}",
                _verdict(item.throughput_ok),
            ),
            _row(
                "TTFT p50 (ms)",
                _fmt(watt["ttft_p50_ms"], 1),
                _fmt(vllm["ttft_p50_ms"], 1),
                _fmt(item.ttft_p50_ratio, 3),
                f"<= {criteria.max_ttft_p50_ratio:.2f}",
                _verdict(item.ttft_ok),
            ),
            _row(
                "GPU energy per output token (J)",
                _fmt(watt["gpu_j_per_output_token"], 4),
                _fmt(vllm["gpu_j_per_output_token"], 4),
                _fmt(item.j_per_token_ratio, 3),
                "",
                "",
            ),
            _row(
                "failed requests (all rounds)",
                item.failed_requests["wattserve"],
                item.failed_requests["vllm"],
                "",
                "= 0",
                _verdict(all_completed),
            ),
            _row("wattserve metered / NVML energy", _fmt(watt["metered_over_nvml"], 3), "", "", "", ""),
            "",
        ]
    failing = [item.concurrency for item in comparisons if not item.passed]
    if not comparisons:
        lines.append("Result: FAIL (no runs)")
    elif failing:
        lines.append(f"Result: FAIL at concurrency {', '.join(map(str, failing))}")
    else:
        lines.append("Result: pass at every concurrency")
    return "\n".join(lines) + "\n"
