"""Models, health, version, metrics and client disconnects on the real server."""

from __future__ import annotations

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import MODEL, Server
from tests.waiting import wait_until

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


def _engine_load(http: httpx.Client) -> tuple[float, float]:
    """vLLM's running-request gauge and generated-token counter."""
    families = {family.name: family for family in text_string_to_metric_families(http.get("/metrics").text)}
    running = families["vllm:num_requests_running"].samples[0].value
    tokens = sum(s.value for s in families["vllm:generation_tokens"].samples if s.name.endswith("_total"))
    return running, tokens


def assert_aborted(http: httpx.Client, tokens_before: float, max_tokens: int) -> None:
    """The request left the engine: nothing runs, far short of the end."""
    wait_until(lambda: _engine_load(http)[0] == 0, "the engine running nothing")
    # One reading: had the request not been aborted it would still run, or have made every token.
    running, tokens = _engine_load(http)
    assert running == 0
    assert tokens - tokens_before < max_tokens


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_client_disconnect_mid_stream_aborts_the_request(server: Server, path: str) -> None:
    body = {"model": MODEL, "max_tokens": 900, "stream": True, "ignore_eos": True}
    body |= {"messages": [{"role": "user", "content": "go"}]} if "chat" in path else {"prompt": "go"}
    with server.http() as http:
        before = _engine_load(http)[1]
        with http.stream("POST", path, json=body) as response:
            assert response.status_code == 200
            for index, _ in enumerate(response.iter_lines()):
                if index > 5:
                    break
        # Leaving the block closes the connection long before 900 tokens could be generated.
        assert_aborted(http, before, 900)


def test_client_disconnect_during_non_streamed_request_aborts_it(server: Server) -> None:
    body = {"model": MODEL, "prompt": "go", "max_tokens": 900, "ignore_eos": True}
    with server.http() as http:
        before = _engine_load(http)[1]
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v1/completions", json=body, timeout=0.5)
        assert_aborted(http, before, 900)
