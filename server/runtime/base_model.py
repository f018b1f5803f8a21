"""What adapters are checked against: the base model's names, its module names and the rank limit."""

from __future__ import annotations

import logging
from pathlib import Path

from adapters.errors import AdapterValidationError
from adapters.validation import BaseModelInfo
from adapters.weights import safetensors_tensor_names

logger = logging.getLogger(__name__)


def module_names(model_dir: Path) -> frozenset[str] | None:
    """Leaf module names (`q_proj`, ...) read from the weight files' headers; None if not a local model."""
    names: set[str] = set()
    for weights in sorted(model_dir.glob("*.safetensors")) if model_dir.is_dir() else []:
        try:
            tensors = safetensors_tensor_names(weights)
        except AdapterValidationError:
            logger.warning("cannot read %s; adapter target modules will not be checked", weights)
            return None
        names |= {tensor.split(".")[-2] for tensor in tensors if tensor.count(".") >= 1}
    return frozenset(names) or None


def base_model_info(served_name: str, model_path: str, max_rank: int) -> BaseModelInfo:
    """The checks an adapter must pass to be served on this base model."""
    return BaseModelInfo(
        names=frozenset({served_name, model_path}),
        module_names=module_names(Path(model_path)),
        max_rank=max_rank,
    )
