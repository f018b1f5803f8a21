"""What adapters are checked against: the base model's names, its modules' weight shapes, the rank limit."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from adapters.errors import AdapterValidationError
from adapters.validation import BaseModelInfo
from adapters.weights import safetensors_header

logger = logging.getLogger(__name__)


def module_shapes(model_dir: Path) -> dict[str, list[tuple[int, ...]]] | None:
    """Each leaf module (`q_proj`, ...) with its weights' shapes, read from the weight files' headers.

    None if the model is not a local folder of safetensors files (a hub id: vLLM resolves it itself).
    """
    shapes: dict[str, list[tuple[int, ...]]] = {}
    for weights in sorted(model_dir.glob("*.safetensors")) if model_dir.is_dir() else []:
        try:
            tensors = safetensors_header(weights)
        except AdapterValidationError:
            logger.warning("cannot read %s; adapter target modules and shapes will not be checked", weights)
            return None
        for tensor in tensors:
            parts = tensor.name.split(".")
            if len(parts) >= 2 and parts[-1] == "weight":
                shapes.setdefault(parts[-2], []).append(tensor.shape)
    return shapes or None


def base_model_info(served_names: Sequence[str], model_path: str, max_rank: int) -> BaseModelInfo:
    """The checks an adapter must pass to be served on this base model; it may take none of its names."""
    shapes = module_shapes(Path(model_path))
    return BaseModelInfo(
        names=frozenset({*served_names, model_path}),
        module_names=frozenset(shapes) if shapes is not None else None,
        max_rank=max_rank,
        module_shapes=shapes,
    )
