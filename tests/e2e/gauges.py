"""The request gauges of a running server, read from one /metrics page, and waiting for them to settle."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.waiting import wait_until

# Every place a request can be held; after any storm, all of them read 0 again.
REQUEST_GAUGES = (
    "wattserve_requests_admitted",
    "wattserve_requests_running",
    "wattserve_requests_waiting",
    "wattserve_requests_queued",
    "wattserve_requests_in_flex_lane",
    "wattserve_responses_awaiting_client",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
)
IDLE_DEADLINE_S = 90  # only a leak reaches it


class HasBaseUrl(Protocol):
    """A server under test (a fixture's `Server` or a `_Launch`)."""

    base_url: str


def page_sums(server: HasBaseUrl, names: Iterable[str]) -> dict[str, float]:
    """Each named sample summed over its label sets, from one scrape of the server's /metrics."""
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        page = http.get("/metrics").text
    values = dict.fromkeys(names, 0.0)
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name in values:
                values[sample.name] += sample.value
    return values


def gauges(server: HasBaseUrl) -> dict[str, float]:
    """Each request gauge, summed over its label sets, from one scrape."""
    return page_sums(server, REQUEST_GAUGES)


def wait_for_gauges(server: HasBaseUrl, wanted: dict[str, float], timeout_s: float = IDLE_DEADLINE_S) -> None:
    """Wait until the gauges named in `wanted` read those values (in one scrape)."""

    last: dict[str, float] = {}

    def reached() -> bool:
        last.update(gauges(server))
        return all(last[name] == value for name, value in wanted.items())

    wait_until(reached, lambda: f"gauges reading {wanted} (last read: {last})", timeout_s)


def wait_for_idle_gauges(server: HasBaseUrl, timeout_s: float = IDLE_DEADLINE_S) -> None:
    """Wait until every request gauge reads 0."""
    wait_for_gauges(server, dict.fromkeys(REQUEST_GAUGES, 0.0), timeout_s)
