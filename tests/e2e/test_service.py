"""Models, health, version, metrics and client disconnects on the real server."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import MODEL, Server

pytestmark = pytest.mark.e2e


def test_models_lists_the_served_model(client: openai.OpenAI, server: Server) -> None:
    models = client.models.list().data
    assert [model.id for model in models] == [MODEL]
    assert models[0].owned_by == "wattserve"


def test_health_and_version_need_no_key(server: Server) -> None:
    with server.http(key=None) as http:
        assert http.get("/health").status_code == 200
        versions = http.get("/version").json()
    assert versions["version"]
    assert versions["vllm_version"] == "0.32.0"


def _aborted_total(http: httpx.Client) -> float:
    families = text_string_to_metric_families(http.get("/metrics").text)
    return sum(
        sample.value
        for family in families
        if family.name == "vllm:request_success"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("finished_reason") == "abort"
    )


def _running(http: httpx.Client) -> float:
    families = text_string_to_metric_families(http.get("/metrics").text)
    return next(f.samples[0].value for f in families if f.name == "vllm:num_requests_running")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_client_disconnect_mid_stream_aborts_the_request(server: Server, path: str) -> None:
    body = {"model": MODEL, "max_tokens": 900, "stream": True, "ignore_eos": True}
    body |= {"messages": [{"role": "user", "content": "go"}]} if "chat" in path else {"prompt": "go"}
    with server.http() as http:
        before = _aborted_total(http)
        with http.stream("POST", path, json=body) as response:
            assert response.status_code == 200
            for index, _ in enumerate(response.iter_lines()):
                if index > 5:
                    break
        # Closing the response drops the connection long before 900 tokens could be generated.
        deadline = time.monotonic() + 20
        while _aborted_total(http) < before + 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _aborted_total(http) == before + 1
        assert _running(http) == 0


def test_client_disconnect_during_non_streamed_request_aborts_it(server: Server) -> None:
    body = {"model": MODEL, "prompt": "go", "max_tokens": 900, "ignore_eos": True}
    with server.http() as http:
        before = _aborted_total(http)
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v1/completions", json=body, timeout=0.5)
        deadline = time.monotonic() + 20
        while _aborted_total(http) < before + 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _aborted_total(http) == before + 1
