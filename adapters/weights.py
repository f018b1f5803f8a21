"""Check safetensors weight files: a sound header, tensors inside the file, and only finite values."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open

from adapters.errors import AdapterValidationError, Reason

MAX_HEADER_BYTES = 100 * 2**20
# Bytes per element of each safetensors dtype.
DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8,
    "F32": 4, "I32": 4, "U32": 4,
    "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as a safetensors header declares it (nothing of its data read)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Bytes its data takes."""
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]


def _corrupt(weights: Path, what: str) -> AdapterValidationError:
    return AdapterValidationError(Reason.CORRUPT_WEIGHTS, f"{weights.name} {what}.")


def _is_offset_pair(offsets: object, data_len: int) -> bool:
    return (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(value, int) and not isinstance(value, bool) for value in offsets)
        and 0 <= offsets[0] <= offsets[1] <= data_len
    )


def _entry(weights: Path, name: str, info: object, data_len: int) -> TensorEntry:
    if not (isinstance(info, dict) and _is_offset_pair(info.get("data_offsets"), data_len)):
        raise _corrupt(weights, f"has a tensor {name[:80]!r} that lies outside the file")
    dtype, shape = info.get("dtype"), info.get("shape")
    if dtype not in DTYPE_BYTES or not (
        isinstance(shape, list)
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise _corrupt(weights, f"declares tensor {name[:80]!r} with an unknown dtype or a malformed shape")
    entry = TensorEntry(name, dtype, tuple(shape))
    start, end = info["data_offsets"]
    if entry.nbytes != end - start:
        raise _corrupt(
            weights,
            f"declares {end - start} bytes for tensor {name[:80]!r}; a {dtype} tensor of shape {shape} "
            f"takes {entry.nbytes}",
        )
    return entry


def safetensors_header(weights: Path) -> list[TensorEntry]:
    """Parse a safetensors header and return its tensors, each checked to lie inside the file.

    Only the header is read, so a file that declares gigabytes costs no more than one that does not.

    Raises:
        AdapterValidationError: The header is truncated, not JSON, points outside the file, or declares a
            tensor whose byte range does not match its dtype and shape.
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
    return [_entry(weights, name, info, data_len) for name, info in header.items() if name != "__metadata__"]


def safetensors_tensor_names(weights: Path) -> list[str]:
    """The names of the tensors of a safetensors file, its header checked as `safetensors_header` does."""
    return [entry.name for entry in safetensors_header(weights)]


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
