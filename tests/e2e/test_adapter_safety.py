"""Hostile adapters on the real server: each gets a coded 4xx, and the engine and the connection stay up.

Odd configs and paths, files symlinked out of the roots, NaN weights, the base model's name, and pins
beyond the engine's adapter slots (the rule is in adapters/slots.py).
"""

from __future__ import annotations

import getpass
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.adapter_files import (
    copy_adapter,
    edit_config,
    odd_configs,
    with_declared_tensor,
    with_files_linked_outside,
    with_non_finite_weight,
)
from tests.e2e.conftest import ADMIN_KEY, MODEL, Server, demo_dir
from tests.e2e.gauges import wait_for_idle_gauges
from tests.e2e.latency_probe import latency_ratio, ratio_tolerable
from tests.e2e.test_adapters import PROMPT, complete, text_of
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e
# The embedded model's default (server/__main__.py: `use_default_model`), which the test server runs.
MAX_LORAS = 4
LIVE = ("loading", "ready", "draining")


@pytest.fixture(scope="module")
def admin(lora_server: Server) -> Iterator[httpx.Client]:
    with lora_server.http(key=ADMIN_KEY) as client:
        yield client


@pytest.fixture(scope="module")
def good(lora_server: Server) -> Path:
    return copy_adapter(demo_dir(lora_server, "demo-alpha"), lora_server.adapter_root / "safety-good")


def connection_of(response: httpx.Response) -> object:
    """The client side of the TCP connection that carried `response`."""
    return response.extensions["network_stream"].get_extra_info("client_addr")


class OneConnection:
    """Sends every request over one keep-alive connection and checks the server never dropped it.

    After an unhandled error the server answers 500 and closes the connection; a coded 4xx keeps it.
    """

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.first: object = None

    def load(self, **body: object) -> httpx.Response:
        response = self.client.post("/v1/adapters", json=body)
        assert response.headers.get("connection", "").lower() != "close", response.text
        self.first = self.first or connection_of(response)
        assert connection_of(response) == self.first, "the server dropped the connection"
        return response


def refused(response: httpx.Response, status: int, code: str, case: str) -> None:
    assert response.status_code == status, (case, response.text)
    error = response.json()["error"]
    assert (error["code"], error["type"]) == (code, "invalid_request_error"), (case, error)
    assert error["message"], case


def catalogue(admin: httpx.Client) -> list[dict]:
    response = admin.get("/v1/adapters")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def settle(admin: httpx.Client) -> list[dict]:
    """Wait until no version is loading or draining (earlier tests retire versions in the background)."""
    wait_until(
        lambda: not any(entry["state"] in ("loading", "draining") for entry in catalogue(admin)),
        "every adapter version done loading and draining",
        timeout_s=60,
    )
    return [entry for entry in catalogue(admin) if entry["state"] in LIVE]


def test_odd_configs_get_a_coded_400_on_a_kept_connection(
    lora_server: Server, admin: httpx.Client, good: Path
) -> None:
    connection = OneConnection(admin)
    for index, (case, (directory, code)) in enumerate(odd_configs(good, lora_server.adapter_root).items()):
        refused(connection.load(name=f"odd-config-{index}", path=str(directory)), 400, code, case)
    assert connection.load(name="odd-config-ok", path=str(good)).status_code == 200
    assert admin.delete("/v1/adapters/odd-config-ok").status_code == 200


def test_odd_paths_get_a_coded_400_on_a_kept_connection(lora_server: Server, admin: httpx.Client) -> None:
    root = lora_server.adapter_root
    cases = {
        "unknown user's home": ("~nonexistentuser-wattserve/adapter", "bad_path"),
        "a user's home, outside the roots": (f"~{getpass.getuser()}", "outside_allowed_roots"),
        "over-long name": (str(root / ("x" * 300)), "bad_path"),
        "over-long path": (str(root) + "/d" * 3000, "bad_path"),
        "NUL byte": (f"{root}/a\x00b", "bad_path"),
        "empty": ("", "bad_path"),
    }
    connection = OneConnection(admin)
    for index, (case, (path, code)) in enumerate(cases.items()):
        refused(connection.load(name=f"odd-path-{index}", path=path), 400, code, case)
    # Not UTF-8: a lone surrogate is valid JSON text but no text the server could hand on, in any field.
    body = json.dumps({"name": "odd-path-x", "path": f"{root}/\udcff"}).encode()
    response = admin.post("/v1/adapters", content=body, headers={"content-type": "application/json"})
    assert connection_of(response) == connection.first
    refused(response, 400, "invalid_encoding", "not UTF-8")
    assert response.json()["error"]["param"] == "path"


def test_files_symlinked_out_of_the_roots_are_refused(
    lora_server: Server, admin: httpx.Client, good: Path, tmp_path: Path
) -> None:
    for index, file_name in enumerate(["adapter_config.json", "adapter_model.safetensors"]):
        target = lora_server.adapter_root / f"linked-file-{index}"
        with_files_linked_outside(good, target, tmp_path, file_name)
        response = admin.post("/v1/adapters", json={"name": f"linked-{index}", "path": str(target)})
        refused(response, 400, "symlink_escape", file_name)
        assert admin.get(f"/v1/adapters/linked-{index}").status_code == 404


def test_the_base_model_name_is_reserved(lora_server: Server, admin: httpx.Client, good: Path) -> None:
    refused(
        admin.post("/v1/adapters", json={"name": MODEL, "path": str(good)}), 400, "reserved_name", "runtime"
    )
    # The same through the watched --adapter-dir: logged and skipped, the base model still answers.
    with lora_server.http() as http:
        base = text_of(complete(http, MODEL))
        copy_adapter(good, lora_server.adapter_root / "watched" / MODEL)
        wait_until(
            lambda: f"adapter not loaded: {MODEL} (" in lora_server.log_path.read_text(),
            "the watcher trying the folder",
            timeout_s=30,
        )
        assert "is the base model's" in lora_server.log_path.read_text()
        cards = [card for card in http.get("/v1/models").json()["data"] if card["id"] == MODEL]
        assert [card["parent"] for card in cards] == [None]
        assert text_of(complete(http, MODEL)) == base
    shutil.rmtree(lora_server.adapter_root / "watched" / MODEL)


def test_an_adapter_naming_another_base_model_loads_with_a_warning_as_in_vllm(
    lora_server: Server, admin: httpx.Client, good: Path
) -> None:
    renamed = edit_config(
        copy_adapter(good, lora_server.adapter_root / "renamed-base"),
        base_model_name_or_path="meta-llama/Llama-3.1-8B",
    )
    loaded = admin.post("/v1/adapters", json={"name": "renamed-base", "path": str(renamed)})
    assert loaded.status_code == 200, loaded.text
    (warning,) = loaded.json()["warnings"]
    assert "'meta-llama/Llama-3.1-8B'" in warning
    assert f"adapter renamed-base@{loaded.json()['version']}" in lora_server.log_path.read_text()
    with lora_server.http() as http:
        assert text_of(complete(http, "renamed-base")) == text_of(complete(http, "demo-alpha"))
    assert admin.delete("/v1/adapters/renamed-base").status_code == 200


def base_answer(http: httpx.Client) -> tuple[str, list[str], list[float]]:
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 16, "temperature": 0, "logprobs": 2}
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    return choice["text"], choice["logprobs"]["tokens"], choice["logprobs"]["token_logprobs"]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_and_the_base_model_is_unchanged(
    lora_server: Server, admin: httpx.Client, good: Path, value: float
) -> None:
    target = lora_server.adapter_root / f"non-finite-{value}"
    with_non_finite_weight(good, target, value)
    with lora_server.http() as http:
        text, tokens, logprobs = base_answer(http)
        refused(
            admin.post("/v1/adapters", json={"name": "poisoned", "path": str(target)}),
            400,
            "non_finite_weights",
            "",
        )
        after_text, after_tokens, after_logprobs = base_answer(http)
    assert (after_text, after_tokens) == (text, tokens)
    assert after_logprobs == pytest.approx(logprobs, abs=1e-4)
    assert admin.get("/v1/adapters/poisoned").status_code == 404


def test_a_declared_giant_tensor_is_refused_from_the_header_and_others_keep_their_latency(
    lora_server: Server, admin: httpx.Client, good: Path
) -> None:
    """2 GiB declared (a sparse file): refused from the header, not read whole, nobody held up."""
    target = with_declared_tensor(good, lora_server.adapter_root / "giant", (8, 2**26))
    assert (target / "adapter_model.safetensors").stat().st_size > 2**31
    answers: list[httpx.Response] = []

    def load_giants(started: threading.Event) -> None:
        started.set()
        with lora_server.http(key=ADMIN_KEY) as client:
            for index in range(5):
                body = {"name": f"giant-{index}", "path": str(target)}
                answers.append(client.post("/v1/adapters", json=body))

    ratio = latency_ratio(lora_server, load_giants)
    for answer in answers:
        refused(answer, 400, "weight_shape_mismatch", "")
    assert "67108864" in answers[0].json()["error"]["message"]  # the dimension no base weight has
    assert ratio_tolerable(ratio), f"small requests took {ratio:.1f}x as long while giants were refused"
    assert admin.get("/v1/adapters/giant-0").status_code == 404
    wait_for_idle_gauges(lora_server)


def serve_all(lora_server: Server, models: list[str]) -> dict[str, str]:
    """One greedy completion per model, all at once, so they share engine steps."""
    results: dict[str, str] = {}

    def run(model: str) -> None:
        with lora_server.http() as http:
            results[model] = text_of(complete(http, model))

    threads = [threading.Thread(target=run, args=(model,)) for model in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == sorted(models)
    return results


def test_pins_beyond_the_engine_slots_are_refused_with_409_and_the_engine_keeps_serving(
    lora_server: Server, admin: httpx.Client, good: Path
) -> None:
    # vLLM cannot unpin: replacing demo-beta drops a pin an earlier test may have left in the engine.
    demo_beta = str(demo_dir(lora_server, "demo-beta"))
    assert admin.post("/v1/adapters", json={"name": "demo-beta", "path": demo_beta}).status_code == 200
    live = settle(admin)
    assert len(live) < MAX_LORAS, live
    with lora_server.http() as http:
        reference = {model: text_of(complete(http, model)) for model in (MODEL, "demo-alpha", "demo-beta")}

    # No pin yet: unpinned versions may outnumber the slots (vLLM swaps them), but none can be pinned then.
    extra = [f"spill-{i}" for i in range(MAX_LORAS + 1 - len(live))]
    for name in extra:
        assert admin.post("/v1/adapters", json={"name": name, "path": str(good)}).status_code == 200
    refused(admin.post(f"/v1/adapters/{extra[0]}/pin"), 409, "pin_limit_reached", "pin route")
    assert admin.get(f"/v1/adapters/{extra[0]}").json()["pinned"] is False
    for name in extra:
        assert admin.delete(f"/v1/adapters/{name}").status_code == 200

    # Pinned loads fill the slots; the next pin, a pinned replacement and an unpinned load are refused.
    pinned = [f"pinned-{i}" for i in range(MAX_LORAS - len(live))]
    for name in pinned:
        response = admin.post("/v1/adapters", json={"name": name, "path": str(good), "pinned": True})
        assert response.status_code == 200, response.text
    refused(
        admin.post("/v1/adapters", json={"name": "pinned-x", "path": str(good), "pinned": True}),
        409,
        "pin_limit_reached",
        "pinned load",
    )
    refused(
        admin.post("/v1/adapters", json={"name": pinned[0], "path": str(good), "pinned": True}),
        409,
        "pin_limit_reached",
        "pinned replacement",
    )
    refused(
        admin.post("/v1/adapters", json={"name": "unpinned-x", "path": str(good)}),
        409,
        "adapter_slots_full",
        "",
    )

    # Every adapter and the base model in the same steps: with one slot too few, this killed vLLM.
    served = serve_all(lora_server, [MODEL, "demo-alpha", "demo-beta", *pinned])
    assert {model: served[model] for model in reference} == reference
    assert {served[name] for name in pinned} == {reference["demo-alpha"]}
    for name in pinned:
        assert admin.delete(f"/v1/adapters/{name}").status_code == 200
    with lora_server.http() as http:
        assert http.get("/health").status_code == 200
        assert text_of(complete(http, "demo-beta")) == reference["demo-beta"]
