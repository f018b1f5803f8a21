"""Adapter errors, in one tree.

Tree::

AdapterError
├── AdapterValidationError   the adapter is refused before the engine sees it (carries a Reason)
├── AdapterCapacityError     the engine's adapter slots cannot take it with the pins they hold (a Reason)
├── AdapterNotFoundError     no ready adapter has that name
└── AdapterLoadError         the engine refused an adapter that passed validation
"""

from __future__ import annotations

import enum


class Reason(str, enum.Enum):
    """Why an adapter was refused; stable strings clients can match on."""

    BAD_NAME = "bad_name"
    RESERVED_NAME = "reserved_name"
    BAD_PATH = "bad_path"
    PATH_NOT_FOUND = "path_not_found"
    OUTSIDE_ROOTS = "outside_allowed_roots"
    SYMLINK_ESCAPE = "symlink_escape"
    PARENT_REFERENCE = "parent_reference"
    MALFORMED_CONFIG = "malformed_adapter_config"
    NOT_LORA = "not_a_lora_adapter"
    UNSUPPORTED_FEATURE = "unsupported_lora_feature"
    PICKLE_WEIGHTS = "pickle_weights_refused"
    MISSING_WEIGHTS = "missing_weights"
    CORRUPT_WEIGHTS = "corrupt_safetensors"
    NON_FINITE_WEIGHTS = "non_finite_weights"
    WEIGHT_SHAPE_MISMATCH = "weight_shape_mismatch"
    RANK_TOO_LARGE = "rank_above_max"
    MISSING_TARGET_MODULE = "missing_target_module"
    # Capacity: the adapter itself is fine, the engine's slots cannot take it now.
    PIN_LIMIT = "pin_limit_reached"
    SLOTS_FULL = "adapter_slots_full"


class AdapterError(Exception):
    """Base of every adapter error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AdapterValidationError(AdapterError):
    """The adapter was refused before the engine saw it."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AdapterCapacityError(AdapterError):
    """A load or pin that the engine's adapter slots cannot hold next to the pinned versions."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AdapterNotFoundError(AdapterError):
    """No ready adapter has that name."""


class AdapterLoadError(AdapterError):
    """The engine refused an adapter that passed validation."""
