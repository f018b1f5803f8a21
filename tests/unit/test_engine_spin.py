"""The engine busy-wait: the plugin sets vLLM's queue readers' spin time, and the setting resolves it."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from vllm.distributed.device_communicators.shm_broadcast import SpinCondition

from server.engine import plugin_gate, spin_tail
from server.settings import SLO_POLICY_SPIN_S, ServerSettings


@pytest.fixture
def vllm_defaults() -> Iterator[tuple]:
    saved = SpinCondition.__init__.__defaults__
    yield saved
    SpinCondition.__init__.__defaults__ = saved


def test_the_plugin_sets_the_spin_of_every_reader_made_after_it_and_says_so(
    vllm_defaults: tuple, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(spin_tail.ENV, "0.02")
    monkeypatch.setenv(plugin_gate.ENV, "1")
    with caplog.at_level(logging.INFO, logger=f"vllm.{spin_tail.__name__}"):
        spin_tail.register()
    assert SpinCondition.__init__.__defaults__ == (0.02,)
    assert vllm_defaults == (1,)  # vLLM 0.32's own
    assert spin_tail.APPLIED % (0.02, spin_tail.ENV) in caplog.text


def test_without_the_variable_vllm_keeps_its_default(
    vllm_defaults: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(spin_tail.ENV, raising=False)
    spin_tail.register()
    assert SpinCondition.__init__.__defaults__ == vllm_defaults


def test_outside_wattserves_engine_the_plugin_does_nothing_even_with_the_spin_set(
    vllm_defaults: tuple, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # `vllm serve` in the same environment loads the plugin too; a stray WATTSERVE_ENGINE_SPIN_SECONDS in
    # its environment must not change it.
    monkeypatch.setenv(spin_tail.ENV, "0.02")
    monkeypatch.delenv(plugin_gate.ENV, raising=False)
    with caplog.at_level(logging.INFO, logger=f"vllm.{spin_tail.__name__}"):
        spin_tail.register()
    assert SpinCondition.__init__.__defaults__ == vllm_defaults
    assert caplog.text == ""


def test_the_slo_policy_spins_briefly_unless_told_otherwise() -> None:
    assert ServerSettings().resolved_engine_spin_seconds is None
    assert ServerSettings(energy_policy="slo").resolved_engine_spin_seconds == SLO_POLICY_SPIN_S
    assert ServerSettings(energy_policy="slo", engine_spin_seconds=1.0).resolved_engine_spin_seconds == 1.0
    assert ServerSettings(engine_spin_seconds=0).resolved_engine_spin_seconds == 0
