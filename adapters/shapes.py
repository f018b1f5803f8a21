"""Check the tensors an adapter's weights file declares against the base model, before any is read.

For a module whose base weight has shape (out, in), LoRA's pair is `lora_A` (r, in) and `lora_B` (out, r);
for an embedding (vocab, hidden) it is `lora_embedding_A` (r, vocab) and `lora_embedding_B` (hidden, r);
DoRA adds a magnitude vector of one of the base's dimensions; a module saved whole keeps the base's
dimensions. So every declared dimension is either a rank (at most the adapter's largest) or one of the
base module's own, and a module carries a bounded number of tensors per instance in the base: what an
adapter may weigh follows from the base model and the rank. A header that declares more is refused
before a byte of it is read (a 2 GiB tensor would otherwise be read whole to be checked).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from adapters.errors import AdapterValidationError, Reason
from adapters.weights import TensorEntry

# Leaf module name (q_proj, embed_tokens, ...) -> the shape of each of its weights in the base model.
ModuleShapes = Mapping[str, Sequence[tuple[int, ...]]]
RANK_FIRST = frozenset({"lora_A", "lora_embedding_A"})
RANK_LAST = frozenset({"lora_B", "lora_embedding_B"})
LORA_PARTS = RANK_FIRST | RANK_LAST | {"lora_magnitude_vector"}
# Per instance of a module in the base: lora_A, lora_B and a magnitude vector, or a whole weight and bias.
TENSORS_PER_INSTANCE = 3


def _refuse(entry: TensorEntry, why: str) -> AdapterValidationError:
    return AdapterValidationError(
        Reason.WEIGHT_SHAPE_MISMATCH, f"Tensor {entry.name[:120]!r} {why}; it does not fit the base model."
    )


def _module_of(name: str) -> tuple[str, str | None]:
    """The tensor's leaf module name, and its LoRA part (None for a module saved whole)."""
    parts = name.split(".")
    for index, part in enumerate(parts):
        if part in LORA_PARTS and index > 0:
            return parts[index - 1], part
    if len(parts) > 1 and parts[-1] in ("weight", "bias"):
        return parts[-2], None
    return parts[-1], None


def _check_one(entry: TensorEntry, lora_part: str | None, dims: set[int], max_rank: int) -> None:
    shape = entry.shape
    if lora_part in RANK_FIRST or lora_part in RANK_LAST:
        if len(shape) != 2:
            raise _refuse(entry, f"has shape {list(shape)}, not a matrix")
        rank, dim = (shape[0], shape[1]) if lora_part in RANK_FIRST else (shape[1], shape[0])
        if not 0 < rank <= max_rank:
            raise _refuse(entry, f"has rank {rank}, above the adapter's largest rank {max_rank}")
        if dim not in dims:
            raise _refuse(entry, f"has dimension {dim}, which no weight of that module has ({sorted(dims)})")
    elif len(shape) > 2 or any(dim not in dims for dim in shape):
        raise _refuse(entry, f"has shape {list(shape)}, which no weight of that module has ({sorted(dims)})")


def check_declared_tensors(entries: Sequence[TensorEntry], max_rank: int, modules: ModuleShapes) -> None:
    """Refuse a weights header whose tensors do not fit the base model's modules and the adapter's rank.

    Raises:
        AdapterValidationError: `weight_shape_mismatch`, naming the first tensor that does not fit.
    """
    per_module: dict[str, int] = {}
    for entry in entries:
        module, lora_part = _module_of(entry.name)
        shapes = modules.get(module)
        if not shapes:
            raise _refuse(entry, f"is for module {module[:80]!r}, which the base model does not have")
        _check_one(entry, lora_part, {dim for shape in shapes for dim in shape}, max_rank)
        per_module[module] = per_module.get(module, 0) + 1
        if per_module[module] > TENSORS_PER_INSTANCE * len(shapes):
            raise _refuse(entry, f"is one tensor too many for {module!r} ({len(shapes)} in the base model)")
