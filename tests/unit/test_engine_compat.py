"""The engine boundary imports on vLLM releases without 0.25's exception classes (0.24 on torch 2.11)."""

from __future__ import annotations

import importlib
import sys
import types

import pytest

from server.engine import compat


def test_with_the_pinned_vllm_the_real_classes_are_used() -> None:
    from vllm import exceptions  # noqa: PLC0415

    reloaded = importlib.reload(compat)
    assert reloaded.GracefulHTTPError is exceptions.GracefulHTTPError
    assert reloaded.VLLMClientError is exceptions.VLLMClientError


def test_without_them_stand_ins_keep_the_wrapper_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    old = types.ModuleType("vllm.exceptions")
    old.VLLMValidationError = ValueError  # what 0.24's module has, among others
    monkeypatch.setitem(sys.modules, "vllm.exceptions", old)
    reloaded = importlib.reload(compat)
    try:
        assert issubclass(reloaded.GracefulHTTPError, Exception)
        assert issubclass(reloaded.VLLMClientError, Exception)
        assert reloaded.GracefulHTTPError.__module__ == "server.engine.compat"
    finally:
        monkeypatch.undo()
        importlib.reload(compat)


@pytest.mark.parametrize("has_cache", [True, False])
def test_vllm_env_lookups_are_frozen_where_the_release_can(
    monkeypatch: pytest.MonkeyPatch, has_cache: bool
) -> None:
    calls: list[str] = []
    fake_envs = types.SimpleNamespace()
    if has_cache:
        fake_envs.enable_envs_cache = lambda: calls.append("enabled")
    monkeypatch.setattr(compat, "envs", fake_envs)
    compat.freeze_vllm_env()
    assert calls == (["enabled"] if has_cache else [])
