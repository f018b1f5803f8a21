"""Write a run to machine-readable files: JSON (the whole result), CSV tables, JSONL (requests).

The CSV files are one row per point (`points.csv`) and one per point and model or service tier
(`breakdown.csv`). JSON is the format `compare` and later reports read back; CSV and JSONL are for
spreadsheets and notebooks. All values stay in base units (seconds, joules, watts), as in the result schema.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

from loadtest.results import RESULT_VERSION, GroupSummary, PointResult, RunResult, TierSummary, energy_field

CellValue = str | int | float | bool | None


def write_json(result: RunResult, path: str | Path) -> Path:
    """Write the whole result as indented JSON.

    Args:
        result: The run.
        path: The file to write.

    Returns:
        The path written.
    """
    path = Path(path)
    # A run without records leaves the key out rather than writing `"requests": null`.
    exclude = {"requests"} if result.requests is None else None
    path.write_text(result.model_dump_json(indent=2, exclude=exclude) + "\n", encoding="utf-8")
    return path


def read_json(path: str | Path) -> RunResult:
    """Read a result written by `write_json`.

    Args:
        path: The JSON file.

    Returns:
        The run.

    Raises:
        ValueError: The file is not a result, or was written with another version of the schema.
    """
    result = RunResult.model_validate_json(Path(path).read_text(encoding="utf-8"))
    if result.version != RESULT_VERSION:
        raise ValueError(f"{path}: result version {result.version}, this reader knows {RESULT_VERSION}")
    return result


def _dist(attr: str, stat: str) -> Callable[[PointResult], CellValue]:
    return lambda p: getattr(getattr(p, attr), stat)


def _request_joules(stat: str) -> Callable[[PointResult], CellValue]:
    return lambda p: None if p.energy is None else getattr(p.energy.request_joules, stat)


CSV_COLUMNS: dict[str, Callable[[PointResult], CellValue]] = {
    "point": lambda p: p.index,
    "label": lambda p: p.load.label,
    "mode": lambda p: p.load.mode,
    "arrival": lambda p: p.load.arrival,
    "rate": lambda p: p.load.rate,
    "concurrency": lambda p: p.load.concurrency,
    "verdict": lambda p: p.validity.verdict,
    "saturated": lambda p: p.validity.saturated,
    "requests": lambda p: p.requests,
    "measured": lambda p: p.measured,
    "ok": lambda p: p.ok,
    "errors": lambda p: sum(p.errors.values()),
    "offered_rps": lambda p: p.offered_rps,
    "answer_span_s": lambda p: p.answer_span_s,
    "request_throughput": lambda p: p.request_throughput,
    "output_throughput": lambda p: p.output_throughput,
    "total_token_throughput": lambda p: p.total_token_throughput,
    "ttft_p50_s": _dist("ttft_s", "p50"),
    "ttft_p90_s": _dist("ttft_s", "p90"),
    "ttft_p99_s": _dist("ttft_s", "p99"),
    "ttft_from_schedule_p99_s": _dist("ttft_from_schedule_s", "p99"),
    "itl_p50_s": _dist("itl_s", "p50"),
    "itl_p90_s": _dist("itl_s", "p90"),
    "itl_p99_s": _dist("itl_s", "p99"),
    "tpot_p50_s": _dist("tpot_s", "p50"),
    "e2e_p50_s": _dist("e2e_s", "p50"),
    "e2e_p99_s": _dist("e2e_s", "p99"),
    "e2e_from_schedule_p99_s": _dist("e2e_from_schedule_s", "p99"),
    "schedule_lag_p99_s": _dist("schedule_lag_s", "p99"),
    "queue_wait_p99_s": _dist("queue_wait_s", "p99"),
    "client_cpu_fraction": lambda p: p.client_cpu_fraction,
    "goodput": lambda p: p.goodput,
    "slo_met": lambda p: p.slo_met,
    "client_prompt_tokens": lambda p: p.tokens.client_prompt,
    "client_completion_tokens": lambda p: p.tokens.client_completion,
    "server_prompt_tokens": lambda p: p.tokens.server_prompt,
    "server_completion_tokens": lambda p: p.tokens.server_completion,
    "energy_source": energy_field("source"),
    "metered_joules": energy_field("metered_joules"),
    "mean_watts": energy_field("mean_watts"),
    "energy_at_saturation": energy_field("at_saturation"),
    "joules_per_output_token": energy_field("joules_per_output_token"),
    "joules_per_total_token": energy_field("joules_per_total_token"),
    "joules_per_output_token_above_idle": energy_field("joules_per_output_token_above_idle"),
    "marginal_joules_per_output_token": energy_field("marginal_joules_per_output_token"),
    "request_joules_p50": _request_joules("p50"),
    "request_joules_p99": _request_joules("p99"),
    "attributed_joules": energy_field("attributed_joules"),
    "server_attributed_joules": energy_field("server_attributed_joules"),
}


def _cell(value: CellValue) -> str | int | float:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"  # as in the JSON, so both files read the same
    return value


def write_csv(result: RunResult, path: str | Path) -> Path:
    """Write one row per point, with the columns of `CSV_COLUMNS`; an empty cell is a missing value.

    Args:
        result: The run.
        path: The file to write.

    Returns:
        The path written.
    """
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for point in result.points:
            writer.writerow([_cell(read(point)) for read in CSV_COLUMNS.values()])
    return path


def _group_dist(attr: str, stat: str) -> Callable[[GroupSummary], CellValue]:
    return lambda g: getattr(getattr(g, attr), stat)


def _response_tiers(group: GroupSummary) -> str:
    if not isinstance(group, TierSummary):
        return ""
    return ";".join(f"{name}={count}" for name, count in sorted(group.response_tiers.items()))


BREAKDOWN_COLUMNS: dict[str, Callable[[GroupSummary], CellValue]] = {
    "response_tiers": _response_tiers,
    "requests": lambda g: g.requests,
    "ok": lambda g: g.ok,
    "output_tokens": lambda g: g.output_tokens,
    "request_throughput": lambda g: g.request_throughput,
    "output_throughput": lambda g: g.output_throughput,
    "ttft_p50_s": _group_dist("ttft_s", "p50"),
    "ttft_p99_s": _group_dist("ttft_s", "p99"),
    "itl_p50_s": _group_dist("itl_s", "p50"),
    "itl_p99_s": _group_dist("itl_s", "p99"),
    "e2e_p50_s": _group_dist("e2e_s", "p50"),
    "e2e_p99_s": _group_dist("e2e_s", "p99"),
    "joules": lambda g: g.joules,
    "joules_per_output_token": lambda g: g.joules_per_output_token,
    "at_saturation": lambda g: g.at_saturation,
}
BREAKDOWN_KEYS = ("point", "label", "group", "name")


def write_breakdown_csv(result: RunResult, path: str | Path) -> Path:
    """Write one row per point and model name, then per point and service tier asked for.

    The first columns are `BREAKDOWN_KEYS`: `group` is `model` or `service_tier` and `name` the model
    or tier; `response_tiers` lists the tiers the server named (`default=12;flex=3`).

    Args:
        result: The run.
        path: The file to write.

    Returns:
        The path written.
    """
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*BREAKDOWN_KEYS, *BREAKDOWN_COLUMNS])
        for point in result.points:
            groups = [("model", a.model, a) for a in point.adapters]
            groups += [("service_tier", t.service_tier, t) for t in point.tiers]
            for kind, name, group in groups:
                cells = [_cell(read(group)) for read in BREAKDOWN_COLUMNS.values()]
                writer.writerow([point.index, point.load.label, kind, name, *cells])
    return path


def write_requests_jsonl(result: RunResult, path: str | Path) -> Path:
    """Write one JSON object per request record, with its derived latencies (`ttft_s`, `e2e_s`, ...).

    Args:
        result: The run; it must have kept its per-request records.
        path: The file to write.

    Returns:
        The path written.

    Raises:
        ValueError: The run kept no per-request records.
    """
    if result.requests is None:
        raise ValueError("the run kept no per-request records")
    path = Path(path)
    with path.open("w", encoding="utf-8") as f:
        for record in result.requests:
            row = record.model_dump(mode="json")
            # The derived values are properties, which model_dump leaves out.
            row.update(
                ok=record.ok,
                ttft_s=record.ttft_s,
                ttft_from_schedule_s=record.ttft_from_schedule_s,
                e2e_s=record.e2e_s,
                e2e_from_schedule_s=record.e2e_from_schedule_s,
                tpot_s=record.tpot_s,
            )
            f.write(json.dumps(row) + "\n")
    return path
