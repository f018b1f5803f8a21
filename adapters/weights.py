"""Check safetensors weight files: a sound header, tensors inside the file, and only finite values."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from safetensors import SafetensorError, safe_open

from adapters.errors import AdapterValidationError, Reason

MAX_HEADER_BYTES = 100 * 2**20


def _corrupt(weights: Path, what: str) -> AdapterValidationError:
    return AdapterValidationError(Reason.CORRUPT_WEIGHTS, f"{weights.name} {what}.")


def _is_offset_pair(offsets: object, data_len: int) -> bool:
    return (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(value, int) and not isinstance(value, bool) for value in offsets)
        and 0 <= offsets[0] <= offsets[1] <= data_len
    )


def safetensors_tensor_names(weights: Path) -> list[str]:
    """Parse a safetensors header, check every tensor lies inside the file, and return the tensor names.

    Raises:
        AdapterValidationError: The header is truncated, not JSON, or points outside the file.
    """
    try:
        size = weights.stat().st_size
        with weights.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise _corrupt(weights, "is too short to be safetensors")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > min(MAX_HEADER_BYTES, size - 8):
                raise _corrupt(weights, "has an impossible header length")
            raw = handle.read(header_len)
    except OSError as err:
        raise _corrupt(weights, f"cannot be read ({err.strerror or err})") from err
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as err:  # not UTF-8, not JSON, or nested past the parser's depth
        raise _corrupt(weights, "header is not JSON") from err
    if not isinstance(header, dict):
        raise _corrupt(weights, "header is not a JSON object")
    data_len = size - 8 - header_len
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not (isinstance(info, dict) and _is_offset_pair(info.get("data_offsets"), data_len)):
            raise _corrupt(weights, f"has a tensor {name[:80]!r} that lies outside the file")
    return [name for name in header if name != "__metadata__"]


def check_finite(weights: Path) -> None:
    """Read every tensor and refuse the file if a floating-point one holds NaN or ±Inf.

    One NaN in an adapter's weights makes every token it touches NaN, and vLLM's batched LoRA ops may
    carry it into rows of other requests; this keeps such weights from reaching the engine at all.
    Reads through the safetensors library, which also checks that each tensor's byte range matches its
    dtype and shape.

    Raises:
        AdapterValidationError: `non_finite_weights`, or `corrupt_safetensors` if the library refuses
            the file.
    """
    import torch  # noqa: PLC0415 - heavy; only the validation thread needs it, and only here

    # Types torch.isfinite takes directly; others (float8) are widened first.
    native = {torch.float16, torch.bfloat16, torch.float32, torch.float64}
    try:
        with safe_open(str(weights), framework="pt") as tensors:
            for name in tensors.keys():  # noqa: SIM118 - safe_open is not a mapping
                tensor = tensors.get_tensor(name)
                if not tensor.is_floating_point():
                    continue
                if tensor.dtype not in native:
                    tensor = tensor.float()
                if not bool(torch.isfinite(tensor).all()):
                    raise AdapterValidationError(
                        Reason.NON_FINITE_WEIGHTS,
                        f"{weights.name}: tensor {name[:80]!r} holds NaN or infinite values.",
                    )
    except (SafetensorError, OSError, ValueError, TypeError, RuntimeError) as err:
        raise _corrupt(weights, f"cannot be read as safetensors ({str(err)[:200]})") from err
