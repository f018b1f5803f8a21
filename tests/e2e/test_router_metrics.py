"""A replica as routers read it, on the real server: every waiting request counted, adapters by served name.

A server with a small admission limit (shared with the slow-client test), flooded with long adapter
streams that are cut once the page has been read; nothing here waits for a generation to finish, so the
module takes a few seconds. The deadlines only catch hangs.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import API_KEY, SMALL_ADMISSION, SMALL_QUEUE, Server
from tests.waiting import until_checked, wait_until

pytestmark = pytest.mark.e2e
HANG_S = 120
ADMITTED = SMALL_ADMISSION
FLOOD = ADMITTED + SMALL_QUEUE - 4  # every stream admitted or queued, none refused
# Long enough that no stream ends before the page is read (each is cut then); fits --max-model-len.
STREAM = {"model": "demo-alpha", "prompt": "Once upon a time", "max_tokens": 900, "ignore_eos": True}
WAITING = "wattserve_num_requests_waiting"
QUEUED = "wattserve_requests_queued"
LORA_INFO = "vllm:lora_requests_info"


@pytest.fixture(scope="module")
def replica(small_admission_server: Server) -> Server:
    """Two admission slots and a queue the flood fits in."""
    return small_admission_server


def read_page(page: str) -> tuple[dict[str, float], list[tuple[dict[str, str], float]]]:
    """The unlabelled gauges, and the `vllm:lora_requests_info` samples, of one /metrics page."""
    gauges: dict[str, float] = {}
    lora_info: list[tuple[dict[str, str], float]] = []
    for family in text_string_to_metric_families(page):
        if family.name in (WAITING, QUEUED):
            gauges[family.name] = family.samples[0].value
        elif family.name == LORA_INFO:
            lora_info = [(sample.labels, sample.value) for sample in family.samples]
    return gauges, lora_info


def test_a_flooded_replica_reads_busy_and_names_the_adapter_it_runs(replica: Server) -> None:
    seen: dict[str, object] = {}

    async def flood() -> None:
        limits = httpx.Limits(max_connections=4 * FLOOD)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(
            base_url=replica.base_url, headers=headers, timeout=HANG_S, limits=limits
        ) as http:

            async def stream() -> None:
                body = STREAM | {"stream": True}
                async with http.stream("POST", "/v1/completions", json=body) as response:
                    async for _ in response.aiter_raw():
                        pass

            streams = [asyncio.create_task(stream()) for _ in range(FLOOD)]

            async def held() -> bool:
                gauges, lora_info = read_page((await http.get("/metrics")).text)
                seen.update(gauges=gauges, lora_info=lora_info)
                newest = max(lora_info, key=lambda row: row[1])[0] if lora_info else {}
                # One page: the flood queued for admission (at least all but two rounds of admitted
                # streams, however fast this machine runs them), the waiting count at least that, and
                # the adapter the admitted streams run named as clients name it.
                return (
                    gauges.get(QUEUED, 0) >= FLOOD - 2 * ADMITTED
                    and gauges.get(WAITING, 0) >= gauges[QUEUED]
                    and newest.get("running_lora_adapters") == "demo-alpha"
                )

            try:
                await until_checked(held, "the flood queued and shown on one /metrics page", HANG_S)
            finally:
                for task in streams:
                    task.cancel()
                await asyncio.gather(*streams, return_exceptions=True)

    asyncio.run(flood())
    lora_info = seen["lora_info"]
    assert isinstance(lora_info, list)
    # No engine key (`demo-alpha@v1#1`) anywhere, and never one label set twice.
    assert all("@" not in value and "#" not in value for labels, _ in lora_info for value in labels.values())
    label_sets = [tuple(sorted(labels.items())) for labels, _ in lora_info]
    assert len(label_sets) == len(set(label_sets))

    def drained() -> bool:
        gauges, _ = read_page(httpx.get(f"{replica.base_url}/metrics", timeout=30).text)
        return gauges.get(WAITING) == 0 and gauges.get(QUEUED) == 0

    wait_until(drained, "the cut streams leaving every queue", HANG_S)
