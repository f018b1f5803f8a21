"""The OpenAI surface beyond chat and completions, with a fake engine.

Model retrieval, unserved routes, continuous usage, cached-token details, token-id prompts, CORS, a root
path, TLS.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from server.api.http_server import uvicorn_config
from server.compose import create_app
from server.energy.meters.base import NullEnergyMeter
from server.settings import ServerSettings
from tests.integration.fake_engine import WORDS, FakeEngine
from tests.waiting import wait_until

MODEL = FakeEngine.served_model_name
KEY = {"Authorization": "Bearer k"}
LOOPBACK = ipaddress.ip_address("127.0.0.1")


@asynccontextmanager
async def serving(**settings: object) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ServerSettings(api_key="k", **settings), FakeEngine, meter=NullEnergyMeter())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def chunks(body: str) -> list[dict]:
    frames = [line.removeprefix("data: ") for line in body.split("\n\n") if line]
    assert frames[-1] == "[DONE]"
    return [json.loads(frame) for frame in frames[:-1]]


async def test_models_retrieve_the_base_model_and_404_for_others() -> None:
    async with serving() as http:
        card = (await http.get(f"/v1/models/{MODEL}", headers=KEY)).json()
        assert (card["id"], card["object"], card["root"]) == (MODEL, "model", FakeEngine.model_path)
        missing = await http.get("/v1/models/org/none", headers=KEY)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "model_not_found"
        assert (await http.get(f"/v1/models/{MODEL}")).status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("POST", "/v1/embeddings", "unsupported_endpoint"),
        ("POST", "/v1/embeddings/x", "unsupported_endpoint"),
        ("GET", "/v1/uploads/u1", "unsupported_endpoint"),
        ("POST", "/v1/images/generations", "unsupported_endpoint"),
        ("POST", "/v1/nothing", None),
    ],
)
async def test_unserved_routes_get_an_openai_error_that_names_them(method: str, path: str, code: str) -> None:
    async with serving() as http:
        response = await http.request(method, path, headers=KEY, json={})
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", code)
    assert f"{method} {path}" in error["message"]
    assert "/v1/chat/completions" in error["message"]


async def test_wrong_method_is_worded_the_same_way() -> None:
    async with serving() as http:
        response = await http.get("/v1/completions", headers=KEY)
    assert response.status_code == 405
    assert "GET /v1/completions" in response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
async def test_continuous_usage_counts_every_chunk(path: str) -> None:
    body = {"model": MODEL, "max_tokens": 4, "stream": True}
    body |= (
        {"prompt": "a b c"} if path == "/v1/completions" else {"messages": [{"role": "user", "content": "a"}]}
    )
    async with serving() as http:
        plain = chunks((await http.post(path, headers=KEY, json=body)).text)
        options = {"include_usage": True, "continuous_usage_stats": True}
        counted = chunks((await http.post(path, headers=KEY, json=body | {"stream_options": options})).text)
    assert all(chunk["usage"] is None for chunk in plain)
    with_tokens = [chunk for chunk in counted if chunk["choices"] and chunk["usage"] is not None]
    # As vLLM counts: chat's role chunk opens with none generated; then each chunk its choice's tokens so far.
    expected = [1, 2, 3, 4] if path == "/v1/completions" else [0, 1, 2, 3, 4]
    assert [chunk["usage"]["completion_tokens"] for chunk in with_tokens] == expected
    prompt_tokens = with_tokens[0]["usage"]["prompt_tokens"]
    assert all(
        c["usage"]["total_tokens"] == prompt_tokens + c["usage"]["completion_tokens"] for c in with_tokens
    )
    final = counted[-1]
    assert final["choices"] == []
    assert final["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize("enabled", [False, True])
async def test_cached_token_details_follow_the_flag(enabled: bool) -> None:
    async with serving(enable_prompt_tokens_details=enabled) as http:
        response = await http.post(
            "/v1/completions", headers=KEY, json={"model": MODEL, "prompt": "a b c d", "max_tokens": 2}
        )
    details = response.json()["usage"].get("prompt_tokens_details", "absent")
    assert details == ({"cached_tokens": 2} if enabled else "absent")


async def test_token_id_prompts_one_or_several_and_echoed_as_text() -> None:
    async with serving() as http:
        one = await http.post("/v1/completions", headers=KEY, json={"model": MODEL, "prompt": [1, 2, 3]})
        several = await http.post(
            "/v1/completions",
            headers=KEY,
            json={"model": MODEL, "prompt": [[1, 2], [3]], "max_tokens": 1, "echo": True},
        )
        for bad in ([], [[]], [-1], [1, "a"], [[1], "a"]):
            refused = await http.post("/v1/completions", headers=KEY, json={"model": MODEL, "prompt": bad})
            assert refused.status_code == 400, bad
            assert refused.json()["error"]["param"] == "prompt"
    assert one.json()["usage"]["prompt_tokens"] == 3
    texts = [choice["text"] for choice in several.json()["choices"]]
    assert texts == [WORDS[1] + WORDS[2] + WORDS[0], WORDS[3] + WORDS[0]]


async def test_cors_preflight_is_answered_before_the_key_check() -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    async with serving(allowed_origins=["https://app.example"]) as http:
        allowed = await http.options("/v1/chat/completions", headers=preflight)
        other = await http.options(
            "/v1/chat/completions", headers=preflight | {"Origin": "https://evil.example"}
        )
        keyless = await http.get("/v1/models", headers={"Origin": "https://app.example"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert other.status_code == 400
    assert keyless.status_code == 401  # CORS answers preflights; it lets no request past the key
    async with serving() as http:
        assert (
            "access-control-allow-origin" not in (await http.options("/v1/models", headers=preflight)).headers
        )


async def test_a_root_path_does_not_open_a_way_around_the_key() -> None:
    async with serving(root_path="/llm") as http:
        for path in ("/llm/v1/models", "/v1/models"):
            assert (await http.get(path)).status_code == 401, path
            assert (await http.get(path, headers=KEY)).json()["data"][0]["id"] == MODEL, path


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(LOOPBACK)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_in_thread(server: uvicorn.Server, ready: Callable[[], bool]) -> threading.Thread:
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: ready() or not thread.is_alive(), "the TLS server starting", timeout_s=30)
    assert thread.is_alive(), "the TLS server stopped"
    return thread


def test_tls_flags_serve_https(tmp_path: Path) -> None:
    key_path, cert_path = self_signed(tmp_path)
    settings = ServerSettings(api_key="k", port=free_port(), ssl_keyfile=key_path, ssl_certfile=cert_path)
    app = create_app(settings, FakeEngine, meter=NullEnergyMeter())
    server = uvicorn.Server(uvicorn_config(app, settings))
    thread = run_in_thread(server, lambda: server.started)
    try:
        with httpx.Client(verify=str(cert_path)) as https:
            response = https.get(f"https://127.0.0.1:{settings.port}/v1/models", headers=KEY)
        assert response.json()["data"][0]["id"] == MODEL
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{settings.port}/health", timeout=5)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
