"""The CPU LoRA fix: base-model rows (index -1) get no adapter delta; adapter rows are unchanged."""

from __future__ import annotations

import logging
from types import ModuleType

import pytest
import torch
from vllm.lora.ops.torch_ops import lora_ops

from server.engine import cpu_lora_fix, plugin_gate

SLOTS, RANK, HIDDEN, TOKENS = 3, 4, 8, 5
# Taken before any test calls register(), which patches vLLM's module in place.
UNPATCHED_SHRINK = lora_ops.bgmv_shrink


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(TOKENS, HIDDEN, generator=generator)
    lora_a = torch.randn(SLOTS, 1, RANK, HIDDEN, generator=generator)
    indices = torch.tensor([-1, 0, 2, -1, 1])
    return x, lora_a, indices


def shrink(op) -> torch.Tensor:  # noqa: ANN001
    x, lora_a, indices = inputs()
    out = torch.zeros(TOKENS, RANK)
    op(x, lora_a, out, indices, 1.0)
    return out


def test_vllm_op_gives_base_rows_the_last_adapter_delta() -> None:
    # The bug the fix exists for; if this starts failing, upstream fixed it and the plugin can go.
    assert UNPATCHED_SHRINK is not cpu_lora_fix.bgmv_shrink
    assert shrink(UNPATCHED_SHRINK)[0].abs().sum() > 0


def test_fixed_shrink_zeroes_base_rows_and_keeps_adapter_rows() -> None:
    fixed = shrink(cpu_lora_fix.bgmv_shrink)
    assert torch.equal(fixed[0], torch.zeros(RANK))
    assert torch.equal(fixed[3], torch.zeros(RANK))
    x, lora_a, indices = inputs()
    for row in (1, 2, 4):
        expected = lora_a[indices[row], 0] @ x[row]
        torch.testing.assert_close(fixed[row], expected)


def test_fixed_expand_adds_nothing_to_base_rows() -> None:
    generator = torch.Generator().manual_seed(1)
    buffer = torch.randn(TOKENS, RANK, generator=generator)
    lora_b = torch.randn(SLOTS, 1, HIDDEN, RANK, generator=generator)
    indices = torch.tensor([-1, 0, 2, -1, 1])
    out = torch.ones(TOKENS, HIDDEN)
    cpu_lora_fix.bgmv_expand(buffer, lora_b, out, indices, add_inputs=True)
    assert torch.equal(out[0], torch.ones(HIDDEN))
    assert not torch.equal(out[1], torch.ones(HIDDEN))
    sliced = torch.ones(TOKENS, 2 * HIDDEN)
    cpu_lora_fix.bgmv_expand_slice(buffer, lora_b, sliced, indices, HIDDEN, HIDDEN, add_inputs=True)
    assert torch.equal(sliced[3], torch.ones(2 * HIDDEN))
    assert torch.equal(sliced[:, :HIDDEN], torch.ones(TOKENS, HIDDEN))


@pytest.fixture
def unpatched(monkeypatch: pytest.MonkeyPatch) -> list[ModuleType]:
    """vLLM's modules the fix patches, restored after the test whatever register() did to them."""
    from vllm.lora.ops import torch_ops  # noqa: PLC0415
    from vllm.lora.punica_wrapper import punica_cpu  # noqa: PLC0415

    modules = [lora_ops, torch_ops, punica_cpu]
    for module in modules:
        for name in cpu_lora_fix.FIXED:
            if hasattr(module, name):
                monkeypatch.setattr(module, name, getattr(module, name))
    return modules


def test_register_patches_where_the_cpu_punica_wrapper_looks_and_says_so(
    unpatched: list[ModuleType], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from vllm.lora.punica_wrapper import punica_cpu  # noqa: PLC0415

    monkeypatch.setenv(plugin_gate.ENV, "1")
    with caplog.at_level(logging.INFO, logger=f"vllm.{cpu_lora_fix.__name__}"):
        cpu_lora_fix.register()
    assert punica_cpu.bgmv_shrink is cpu_lora_fix.bgmv_shrink
    assert lora_ops.bgmv_expand is cpu_lora_fix.bgmv_expand
    assert cpu_lora_fix.APPLIED % plugin_gate.ENV in caplog.text


def test_outside_wattserves_engine_register_leaves_vllm_as_it_ships(
    unpatched: list[ModuleType], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # `vllm serve` in the same environment loads the plugin too; it must run vLLM's own ops there.
    before = {(module, name): getattr(module, name) for module in unpatched for name in cpu_lora_fix.FIXED}
    monkeypatch.delenv(plugin_gate.ENV, raising=False)
    with caplog.at_level(logging.INFO, logger=f"vllm.{cpu_lora_fix.__name__}"):
        cpu_lora_fix.register()
    assert {key: getattr(*key) for key in before} == before
    assert lora_ops.bgmv_shrink is UNPATCHED_SHRINK
    assert caplog.text == ""


def test_nan_in_an_adapter_slot_never_reaches_base_rows() -> None:
    # Base rows read slot 0 before masking (index -1 clamped); NaN * 0 would still be NaN there.
    x, lora_a, indices = inputs()
    lora_a[0] = float("nan")
    shrunk = torch.zeros(TOKENS, RANK)
    cpu_lora_fix.bgmv_shrink(x, lora_a, shrunk, indices, 1.0)
    assert torch.equal(shrunk[0], torch.zeros(RANK))
    assert torch.equal(shrunk[3], torch.zeros(RANK))
    assert shrunk[1].isnan().all()  # the row that uses the NaN slot is its own problem
    assert torch.isfinite(shrunk[[2, 4]]).all()

    lora_b = torch.randn(SLOTS, 1, HIDDEN, RANK, generator=torch.Generator().manual_seed(2))
    lora_b[0] = float("inf")
    for expand in (
        lambda out: cpu_lora_fix.bgmv_expand(shrunk, lora_b, out, indices, add_inputs=True),
        lambda out: cpu_lora_fix.bgmv_expand_slice(shrunk, lora_b, out, indices, 0, HIDDEN, add_inputs=True),
    ):
        out = torch.ones(TOKENS, HIDDEN)
        expand(out)
        assert torch.equal(out[[0, 3]], torch.ones(2, HIDDEN))
        assert torch.isfinite(out[[2, 4]]).all()
