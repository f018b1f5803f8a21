"""`Flag`: one wattserve flag, the settings field it sets, its help and argparse options."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any


@dataclass(frozen=True)
class Flag:
    """One wattserve flag: its spelling, the settings field it sets, its help, extra argparse options."""

    flag: str
    field: str
    help: str
    options: dict[str, Any] = dataclass_field(default_factory=dict)
