"""The harness's contract with wattserve, checked on the server's own definitions.

`loadtest` talks to the server only over HTTP, so nothing but this test notices when either side renames
a metric or label, or reshapes `usage.energy`: the metric page is rendered by
`server.observability.metrics` and the stream events by `server.protocol` and `server.api.sse`, then read
back with the harness's own parsers.
"""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from loadtest import scrape
from loadtest.client import Outcome, StreamingClient
from loadtest.scrape import parse_metrics
from loadtest.sse import SseParser
from loadtest.workload import RequestSpec
from server.answers import ChatChunkChoice, ChatCompletionChunk, ChatDelta, EnergyUsage, Usage
from server.api.sse import DONE, sse_event
from server.energy.ledger import EnergyWindow, Share
from server.errors import EngineUnavailableError, server_error_body
from server.observability.metrics import BASE_LABEL, ServerMetrics
from server.outcome import RequestRecord, Status

# The labels each harness name relies on (scrape.py's comments), beside the name.
LABELS = {
    scrape.METERED: {"source"},
    scrape.ATTRIBUTED: {"adapter", "tier", "phase"},
    scrape.IDLE: set(),
    scrape.PROMPT_TOKENS: {"adapter", "tier"},
    scrape.GENERATION_TOKENS: {"adapter", "tier"},
    scrape.POWER: {"device", "source"},
}


def fresh_metrics() -> tuple[CollectorRegistry, ServerMetrics]:
    """The metrics as `create_app` leaves them before any request: base-model series created."""
    registry = CollectorRegistry()
    metrics = ServerMetrics(registry, energy_source="estimated", devices=["gpu0", "gpu1"])
    metrics.adapter_added(BASE_LABEL)
    return registry, metrics


def busy_metrics() -> CollectorRegistry:
    registry, metrics = fresh_metrics()
    metrics.adapter_added("sql-lora")
    ok = {"status": Status.OK}
    metrics.record(RequestRecord(BASE_LABEL, "default", **ok, prompt_tokens=11, completion_tokens=7))
    metrics.record(RequestRecord("sql-lora", "flex", **ok, prompt_tokens=5, completion_tokens=3))
    window = EnergyWindow(
        0.0, 1.0, metered_j=8.0, idle_j=0.5, static_j=3.0, dynamic_j=4.5, idle_grams=0, floor_w=3
    )
    window.shares = {
        (BASE_LABEL, "default", "prefill"): Share(joules=1.5, dynamic_j=1.0),
        (BASE_LABEL, "default", "decode"): Share(joules=4.0, dynamic_j=2.5),
        ("sql-lora", "flex", "decode"): Share(joules=2.0, dynamic_j=1.0),
    }
    metrics.export_window(window)
    metrics.export_power([120.0, 80.0])
    return registry


def samples_by_name(page: str) -> Iterator[tuple[str, dict[str, str]]]:
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            yield sample.name, sample.labels


@pytest.mark.parametrize("name", sorted(LABELS))
def test_each_name_the_harness_reads_exists_with_its_labels(name: str) -> None:
    page = generate_latest(busy_metrics()).decode()
    label_sets = [set(labels) for sample, labels in samples_by_name(page) if sample == name]
    assert label_sets, f"{name} is not on the server's metric page"
    assert all(labels == LABELS[name] for labels in label_sets)


def test_the_harness_parses_the_server_page() -> None:
    scraped = parse_metrics(generate_latest(busy_metrics()).decode(), at=1.0)
    assert scraped.totals == pytest.approx(
        {
            scrape.METERED: 1.5 + 4.0 + 2.0 + 0.5,
            scrape.ATTRIBUTED: 1.5 + 4.0 + 2.0,
            scrape.IDLE: 0.5,
            scrape.PROMPT_TOKENS: 16.0,
            scrape.GENERATION_TOKENS: 10.0,
            scrape.POWER: 200.0,
        }
    )
    assert scraped.by_adapter == {
        scrape.ATTRIBUTED: {BASE_LABEL: pytest.approx(5.5), "sql-lora": pytest.approx(2.0)},
        scrape.PROMPT_TOKENS: {BASE_LABEL: 11.0, "sql-lora": 5.0},
        scrape.GENERATION_TOKENS: {BASE_LABEL: 7.0, "sql-lora": 3.0},
    }
    assert scraped.meter_source == "estimated"


def test_counters_exist_before_the_first_request() -> None:
    # A counter that appears only after the first request would be missing from the scrape taken before
    # the first send, and every delta from that scrape would come out short (or None).
    registry, _ = fresh_metrics()
    scraped = parse_metrics(generate_latest(registry).decode(), at=0.0)
    for name in (
        scrape.METERED,
        scrape.ATTRIBUTED,
        scrape.IDLE,
        scrape.PROMPT_TOKENS,
        scrape.GENERATION_TOKENS,
    ):
        assert scraped.totals.get(name) == 0.0, name
    assert scraped.meter_source == "estimated"


def chunk(delta: ChatDelta | None = None, usage: Usage | None = None) -> bytes:
    choices = [] if delta is None else [ChatChunkChoice(index=0, delta=delta)]
    return sse_event(
        ChatCompletionChunk(id="chatcmpl-1", created=0, model="base", choices=choices, usage=usage)
    )


def server_stream() -> list[bytes]:
    """A chat stream as wattserve's chat route writes it: role chunk, tokens, usage with energy, DONE."""
    energy = EnergyUsage(
        joules=0.75, dynamic_joules=0.5, joules_per_output_token=0.375, co2e_grams=0.01, source="estimated"
    )
    usage = Usage(prompt_tokens=4, completion_tokens=2, total_tokens=6, energy=energy)
    return [
        chunk(ChatDelta(role="assistant", content="")),
        chunk(ChatDelta(content="Hel")),
        chunk(ChatDelta(content="lo")),
        chunk(usage=usage),
        DONE,
    ]


def test_the_server_sse_encoding_parses() -> None:
    parser = SseParser()
    events = [data for piece in server_stream() for data in parser.feed(piece)]
    assert len(events) == 5
    assert events[-1] == "[DONE]"
    assert parser.pending == b""


async def serve_and_send(pieces: list[bytes]) -> Outcome:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    spec = RequestSpec(
        model="base", api="chat", prompt=None, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        return await StreamingClient(session, str(server.make_url("/"))).send(spec)


async def test_the_client_reads_the_server_usage_and_energy() -> None:
    outcome = await serve_and_send(server_stream())
    assert outcome.error is None
    assert (outcome.prompt_tokens, outcome.completion_tokens, outcome.token_source) == (4, 2, "usage")
    assert (outcome.energy_joules, outcome.energy_source) == (0.75, "estimated")
    assert len(outcome.itl_s) == 1  # the role-only chunk is not a token: only "Hel" -> "lo"


async def test_the_client_reads_the_server_mid_stream_error() -> None:
    error = sse_event(server_error_body(EngineUnavailableError("engine died")))
    outcome = await serve_and_send([*server_stream()[:2], error, DONE])
    assert outcome.error == "stream_error"
    assert "engine died" in outcome.error_detail
