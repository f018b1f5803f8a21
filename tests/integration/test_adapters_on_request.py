"""Load on first request: a `model` naming an --adapter-dir folder that is not loaded loads it, once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

import adapters.loader
from server.settings import ServerSettings
from tests.integration.lora_engine import LoraEngine, serving, write_adapter
from tests.waiting import until

PROMPT = {"prompt": "a b", "max_tokens": 2}


async def complete(http: httpx.AsyncClient, model: str) -> httpx.Response:
    return await http.post("/v1/completions", json={"model": model, **PROMPT})


async def test_concurrent_first_requests_share_one_load(tmp_path: Path) -> None:
    engine = LoraEngine()
    async with serving(ServerSettings(adapter_dir=tmp_path), engine) as http:
        write_adapter(tmp_path / "sql")  # after startup, and no watcher: only a request can load it
        engine.loads_open.clear()
        first = [asyncio.create_task(complete(http, "sql")) for _ in range(5)]
        await until(lambda: len(engine.added) == 1, "the engine asked to load the adapter")
        engine.loads_open.set()
        answers = await asyncio.gather(*first)
        assert [answer.status_code for answer in answers] == [200] * 5, [a.text for a in answers]
        assert all(answer.json()["model"] == "sql" for answer in answers)
        assert [ref.name for ref in engine.added] == ["sql"]
        listed = [card["id"] for card in (await http.get("/v1/models")).json()["data"]]
        assert "sql" in listed
        assert (await complete(http, "sql")).status_code == 200
        assert len(engine.added) == 1


async def test_a_versioned_folder_loads_under_its_name(tmp_path: Path) -> None:
    engine = LoraEngine()
    async with serving(ServerSettings(adapter_dir=tmp_path), engine) as http:
        write_adapter(tmp_path / "chat@v7")
        assert (await complete(http, "chat")).status_code == 200
        assert [(ref.name, ref.version) for ref in engine.added] == [("chat", "v7")]


@pytest.mark.parametrize("model", ["absent", "../sql", "sql/..", "a/b", "chat@v7", "s*"])
async def test_names_without_a_folder_or_unsafe_are_404_in_openai_form(tmp_path: Path, model: str) -> None:
    engine = LoraEngine()
    (tmp_path / "dir").mkdir()
    write_adapter(tmp_path / "sql")  # beside the adapter dir: `../sql` would reach it as a path
    write_adapter(tmp_path / "dir" / "chat@v7")
    async with serving(ServerSettings(adapter_dir=tmp_path / "dir"), engine) as http:
        engine.added.clear()  # the startup load of chat@v7
        answer = await complete(http, model)
        assert answer.status_code == 404
        error = answer.json()["error"]
        assert (error["code"], error["param"], error["type"]) == (
            "model_not_found",
            "model",
            "invalid_request_error",
        )
        assert engine.added == []


async def test_a_bad_folder_is_refused_clearly_and_not_retried_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    validations: list[str] = []
    validate = adapters.loader.validate_adapter

    def counted(raw_path: str, *args: Any) -> Any:
        validations.append(raw_path)
        return validate(raw_path, *args)

    monkeypatch.setattr(adapters.loader, "validate_adapter", counted)
    engine = LoraEngine()
    async with serving(ServerSettings(adapter_dir=tmp_path), engine) as http:
        broken = write_adapter(tmp_path / "broken")
        config = (broken / "adapter_config.json").read_text()
        (broken / "adapter_config.json").write_text("{not json")
        for _ in range(3):
            answer = await complete(http, "broken")
            assert answer.status_code == 400
            error = answer.json()["error"]
            assert error["code"] == "malformed_adapter_config"
            assert "broken" in error["message"]
        assert len(validations) == 1  # refused once, then remembered while the folder is unchanged
        assert engine.added == []

        (broken / "adapter_config.json").write_text(json.dumps(json.loads(config)))
        assert (await complete(http, "broken")).status_code == 200
        assert len(validations) == 2
        assert [ref.name for ref in engine.added] == ["broken"]


async def test_off_keeps_unloaded_folders_unserved(tmp_path: Path) -> None:
    engine = LoraEngine()
    async with serving(ServerSettings(adapter_dir=tmp_path, load_adapters_on_request=False), engine) as http:
        write_adapter(tmp_path / "sql")
        assert (await complete(http, "sql")).status_code == 404
        assert engine.added == []
