"""`vllm serve` flags with behaviour, in the in-process app on a fake engine.

Every --served-model-name alias answers and is listed, any of several --api-key values opens /v1, the JSON
form of --lora-modules loads its adapter, a startup adapter that fails stops startup unless
--allow-missing-adapters, and the answer-wording flags (--response-role,
--enable-force-include-usage, --enable-request-id-headers) do what vLLM's do.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.types import AdapterRef
from server.api.http_server import log_level_number, uvicorn_config
from server.compose import compose, create_app
from server.energy.meters.base import NullEnergyMeter
from server.runtime.lifecycle import EXIT_STARTUP_FAILED
from server.runtime.startup_adapters import StartupAdaptersError
from server.settings import ServerSettings
from tests.integration.fake_engine import FakeEngine
from tests.integration.lora_engine import write_adapter

PROMPT = {"prompt": "a b c", "max_tokens": 3}


class AliasedLoraEngine(FakeEngine):
    """Answers to two names and takes adapters (loading one is a no-op)."""

    served_model_names = ("fake-model", "fake-alias")
    lora_enabled = True
    max_lora_rank = 8
    max_loras = 4

    async def add_lora(self, ref: AdapterRef) -> None:
        pass

    async def remove_lora(self, adapter_id: int) -> None:
        pass

    async def pin_lora(self, adapter_id: int) -> None:
        pass


class StampMiddleware:
    """A deployment's own ASGI middleware, as --middleware names it: stamps every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-stamp", b"1")]}
            await send(message)

        await self.app(scope, receive, stamped)


@asynccontextmanager
async def serving(settings: ServerSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, AliasedLoraEngine, meter=NullEnergyMeter())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_every_alias_answers_and_is_listed_and_any_key_opens(tmp_path: Path) -> None:
    adapter = write_adapter(tmp_path / "sql")
    lora = json.dumps({"name": "sql", "path": str(adapter), "base_model_name": "fake-model"})
    settings = ServerSettings(api_key=["old", "new"], lora_modules=[lora])
    async with serving(settings) as http:
        listed = (await http.get("/v1/models", headers=bearer("new"))).json()["data"]
        assert [(card["id"], card["root"]) for card in listed[:2]] == [
            ("fake-model", FakeEngine.model_path),
            ("fake-alias", FakeEngine.model_path),
        ]
        # The JSON form loaded the adapter, parented on the first name.
        assert [(card["id"], card["parent"]) for card in listed[2:]] == [("sql", "fake-model")]
        for model in ("fake-model", "fake-alias", "sql"):
            answer = await http.post(
                "/v1/completions", json={"model": model, **PROMPT}, headers=bearer("old")
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["model"] == model
        alias_card = await http.get("/v1/models/fake-alias", headers=bearer("old"))
        assert alias_card.json()["id"] == "fake-alias"
        refused = await http.post(
            "/v1/completions", json={"model": "fake-model", **PROMPT}, headers=bearer("k")
        )
        assert refused.status_code == 401
        unknown = await http.post("/v1/completions", json={"model": "other", **PROMPT}, headers=bearer("new"))
        assert unknown.status_code == 404


async def test_response_role_forced_usage_and_request_id_headers() -> None:
    settings = ServerSettings(response_role="bot", force_include_usage=True, enable_request_id_headers=True)
    async with serving(settings) as http:
        chat = {"model": "fake-alias", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        answer = await http.post("/v1/chat/completions", json=chat, headers={"X-Request-Id": "abc"})
        assert answer.json()["choices"][0]["message"]["role"] == "bot"
        assert answer.headers["x-request-id"] == "abc"
        stream = await http.post("/v1/chat/completions", json={**chat, "stream": True})
        frames = [line.removeprefix("data: ") for line in stream.text.split("\n\n") if line]
        chunks = [json.loads(frame) for frame in frames[:-1]]
        assert chunks[0]["choices"][0]["delta"]["role"] == "bot"
        # Forced usage: every chunk carries it, and the stream ends with a usage-only chunk.
        assert all(chunk["usage"] is not None for chunk in chunks[1:])
        assert chunks[-1]["choices"] == []
        assert len(stream.headers["x-request-id"]) == 32  # none given: a new one


async def test_middleware_by_import_path_wraps_the_app() -> None:
    settings = ServerSettings(middleware=[f"{__name__}.StampMiddleware"])
    async with serving(settings) as http:
        assert (await http.get("/health")).headers["x-stamp"] == "1"


def test_a_unix_socket_tls_ciphers_and_the_trace_level_reach_uvicorn(tmp_path: Path) -> None:
    socket_path = str(tmp_path / "wattserve.sock")
    settings = ServerSettings(uds=socket_path, ssl_ciphers="ECDHE-RSA-AES256-GCM-SHA384", log_level="trace")
    config = uvicorn_config(create_app(settings, AliasedLoraEngine, meter=NullEnergyMeter()), settings)
    assert (config.uds, config.ssl_ciphers) == (socket_path, "ECDHE-RSA-AES256-GCM-SHA384")
    assert log_level_number("trace") < log_level_number("debug")


async def test_a_startup_adapter_that_fails_stops_startup_and_the_engine(tmp_path: Path) -> None:
    good = write_adapter(tmp_path / "good")
    settings = ServerSettings(lora_modules=[f"good={good}", f"gone={tmp_path / 'missing'}"])
    stopped: list[FakeEngine] = []
    composed = compose(settings, AliasedLoraEngine, stop_engine=stopped.append, meter=NullEnergyMeter())
    app = composed.app
    with pytest.raises(StartupAdaptersError, match="--allow-missing-adapters"):
        async with app.router.lifespan_context(app):
            pytest.fail("the app started without one of its adapters")
    assert len(stopped) == 1
    assert composed.lifecycle.exit_code == EXIT_STARTUP_FAILED


async def test_allow_missing_adapters_serves_the_ones_that_loaded(tmp_path: Path) -> None:
    good = write_adapter(tmp_path / "good")
    settings = ServerSettings(
        lora_modules=[f"good={good}", f"gone={tmp_path / 'missing'}"], allow_missing_adapters=True
    )
    async with serving(settings) as http:
        listed = [card["id"] for card in (await http.get("/v1/models")).json()["data"]]
    assert listed == ["fake-model", "fake-alias", "good"]
