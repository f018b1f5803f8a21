"""LoRA adapters on the real server: demo adapters, offline parity, lifecycle, bad adapters, auth."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.adapter_files import bad_adapters, copy_adapter
from tests.e2e.conftest import ADMIN_KEY, MODEL, Server, demo_dir
from tests.e2e.test_offline_reference import offline_texts
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e
PROMPT = "The sea was calm and"
TOKENS = 16


def complete(http: httpx.Client, model: str, max_tokens: int = TOKENS) -> httpx.Response:
    return http.post(
        "/v1/completions", json={"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0}
    )


def text_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


@pytest.fixture(scope="module")
def admin(lora_server: Server) -> Iterator[httpx.Client]:
    with lora_server.http(key=ADMIN_KEY) as client:
        yield client


def test_models_list_demo_adapters_with_the_base_as_parent(lora_client: openai.OpenAI) -> None:
    cards = {card.id: card for card in lora_client.models.list().data}
    assert {"demo-alpha", "demo-beta"} <= cards.keys()
    assert cards["demo-alpha"].model_extra["parent"] == MODEL
    assert cards[MODEL].model_extra["parent"] is None


def test_demo_adapters_equal_offline_lora_output_and_differ_from_base(
    lora_server: Server, tmp_path: Path
) -> None:
    names = ["demo-alpha", "demo-beta"]
    with lora_server.http() as http:
        served = {name: text_of(complete(http, name)) for name in [MODEL, *names]}
    requests = [{"prompt": PROMPT, "max_tokens": TOKENS}] + [
        {
            "prompt": PROMPT,
            "max_tokens": TOKENS,
            "lora": {"name": n, "id": i + 1, "path": str(demo_dir(lora_server, n))},
        }
        for i, n in enumerate(names)
    ]
    offline = offline_texts(lora_server.model_dir, requests, tmp_path)
    assert [served[MODEL], served["demo-alpha"], served["demo-beta"]] == offline
    assert len(set(served.values())) == 3


def test_base_output_is_unchanged_when_batched_with_adapter_requests(lora_server: Server) -> None:
    # Fails without the CPU LoRA fix plugin: base rows then pick up the last adapter slot's delta.
    with lora_server.http() as http:
        alone = text_of(complete(http, MODEL, 48))
    results: dict[int, str] = {}

    def run(index: int, model: str) -> None:
        with lora_server.http() as http:
            results[index] = text_of(complete(http, model, 48))

    models = ["demo-alpha", MODEL, "demo-beta", MODEL, "demo-alpha", MODEL]
    threads = [threading.Thread(target=run, args=(i, m)) for i, m in enumerate(models)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i, m in enumerate(models) if m == MODEL] == [alone] * 3


def test_load_replace_unload_lifecycle(
    lora_server: Server, admin: httpx.Client, versions: dict[str, Path]
) -> None:
    with lora_server.http() as http:
        reference = {
            v: text_of(complete(http, f"demo-{'alpha' if v == 'v1' else 'beta'}")) for v in ("v1", "v2")
        }
        loaded = admin.post("/v1/adapters", json={"name": "life", "path": str(versions["v1"])})
        assert loaded.status_code == 200, loaded.text
        first = loaded.json()
        assert (first["state"], first["rank"], first["base_model"]) == ("ready", 8, MODEL)
        response = complete(http, "life")
        assert response.headers["x-adapter-version"] == f"life@{first['version']}"
        assert text_of(response) == reference["v1"]

        second = admin.post("/v1/adapters", json={"name": "life", "path": str(versions["v2"])}).json()
        assert second["adapter_id"] > first["adapter_id"]
        response = complete(http, "life")
        assert response.headers["x-adapter-version"] == f"life@{second['version']}"
        assert text_of(response) == reference["v2"]

        deleted = admin.delete("/v1/adapters/life")
        assert deleted.json()["state"] == "unloaded"
        gone = complete(http, "life")
        assert gone.status_code == 404
        assert gone.json()["error"]["code"] == "model_not_found"
        states = {a["adapter_id"]: a["state"] for a in admin.get("/v1/adapters").json()["data"]}
    assert states[first["adapter_id"]] == states[second["adapter_id"]] == "unloaded"


def test_in_flight_stream_finishes_on_the_old_version_during_replacement(
    lora_server: Server, admin: httpx.Client, versions: dict[str, Path]
) -> None:
    assert admin.post("/v1/adapters", json={"name": "swap", "path": str(versions["v1"])}).status_code == 200
    with lora_server.http() as http:
        expected_old = text_of(complete(http, "swap", 300))
        body = {"model": "swap", "prompt": PROMPT, "max_tokens": 300, "temperature": 0, "stream": True}
        with http.stream("POST", "/v1/completions", json=body) as stream:
            old_version = stream.headers["x-adapter-version"]
            lines = stream.iter_lines()
            text = json.loads(next(lines).removeprefix("data: "))["choices"][0]["text"]
            replaced = admin.post("/v1/adapters", json={"name": "swap", "path": str(versions["v2"])}).json()
            assert complete(http, "swap").headers["x-adapter-version"] == f"swap@{replaced['version']}"
            for line in lines:
                if line.startswith("data: {"):
                    text += json.loads(line.removeprefix("data: "))["choices"][0]["text"]
        assert old_version != f"swap@{replaced['version']}"
        assert text == expected_old

    def old_state() -> str:
        catalogue = admin.get("/v1/adapters").json()["data"]
        return next(a["state"] for a in catalogue if f"{a['name']}@{a['version']}" == old_version)

    wait_until(lambda: old_state() == "unloaded", "the replaced version unloaded once its stream ended")
    admin.delete("/v1/adapters/swap")


def test_bad_adapters_get_a_clear_4xx_and_the_server_keeps_serving(
    lora_server: Server, admin: httpx.Client, versions: dict[str, Path], tmp_path: Path
) -> None:
    cases = bad_adapters(versions["v1"], lora_server.adapter_root, tmp_path)
    for case, (name, path, reason) in cases.items():
        response = admin.post("/v1/adapters", json={"name": name, "path": path})
        assert response.status_code == 400, (case, response.text)
        error = response.json()["error"]
        assert error["code"] == reason, (case, error)
        assert error["message"]
    with lora_server.http() as http:
        assert text_of(complete(http, "demo-alpha"))
        assert http.get("/health").status_code == 200


def test_user_key_cannot_manage_adapters(lora_server: Server, versions: dict[str, Path]) -> None:
    with lora_server.http() as user:
        for method, path, body in [
            ("GET", "/v1/adapters", None),
            ("POST", "/v1/adapters", {"name": "x", "path": str(versions["v1"])}),
            ("DELETE", "/v1/adapters/demo-alpha", None),
            ("POST", "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": str(versions["v1"])}),
        ]:
            assert user.request(method, path, json=body).status_code == 401


def test_vllm_load_and_unload_bodies(
    lora_server: Server, admin: httpx.Client, versions: dict[str, Path]
) -> None:
    loaded = admin.post(
        "/v1/load_lora_adapter", json={"lora_name": "compat", "lora_path": str(versions["v3"])}
    )
    assert loaded.status_code == 200
    assert "compat" in loaded.text
    with lora_server.http() as http:
        assert complete(http, "compat").status_code == 200
        assert admin.post("/v1/unload_lora_adapter", json={"lora_name": "compat"}).status_code == 200
        assert complete(http, "compat").status_code == 404
    assert admin.post("/v1/unload_lora_adapter", json={"lora_name": "compat"}).status_code == 404


def test_pin_and_unpin(admin: httpx.Client) -> None:
    assert admin.post("/v1/adapters/demo-beta/pin").json()["pinned"] is True
    assert admin.get("/v1/adapters/demo-beta").json()["pinned"] is True
    assert admin.post("/v1/adapters/demo-beta/unpin").json()["pinned"] is False
    assert admin.post("/v1/adapters/nothing/pin").status_code == 404


def test_echo_with_logprobs_is_refused_with_lora_on_cpu(lora_server: Server) -> None:
    with lora_server.http() as http:
        body = {"model": MODEL, "prompt": PROMPT, "echo": True, "logprobs": 1, "max_tokens": 2}
        response = http.post("/v1/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "echo"


def test_watched_directory_loads_and_unloads(lora_server: Server, versions: dict[str, Path]) -> None:
    watched = lora_server.adapter_root / "watched"

    def served_models() -> set[str]:
        with lora_server.http() as http:
            return {card["id"] for card in http.get("/v1/models").json()["data"]}

    copy_adapter(versions["v2"], watched / "dropped@7")
    wait_until(lambda: "dropped" in served_models(), "the dropped adapter served", timeout_s=20)
    with lora_server.http() as http:
        assert complete(http, "dropped").headers["x-adapter-version"] == "dropped@7"
    shutil.rmtree(watched / "dropped@7")
    wait_until(lambda: "dropped" not in served_models(), "the removed adapter gone", timeout_s=20)
