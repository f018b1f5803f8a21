"""The harness's version: the installed distribution's, else the checkout's `pyproject.toml`, else unknown."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

DISTRIBUTION = "wattserve"
UNKNOWN = "unknown"
# `python -m loadtest` runs from a plain checkout too, where no distribution metadata exists.
_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
# tomllib is 3.11+; the [project] table's own lines are all this needs.
_PROJECT_TABLE = re.compile(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", re.MULTILINE | re.DOTALL)
_VERSION_LINE = re.compile(r'^version\s*=\s*"([^"]+)"\s*$', re.MULTILINE)


def harness_version(pyproject: Path = _PYPROJECT) -> str:
    """The version to stamp on results.

    Args:
        pyproject: The checkout's project file, read when the distribution is not installed.

    Returns:
        The installed version; else the checkout's, suffixed `+checkout`; else `"unknown"`.
    """
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        project = pyproject.read_text(encoding="utf-8")
    except OSError:
        return UNKNOWN
    table = _PROJECT_TABLE.search(project)
    match = _VERSION_LINE.search(table.group(1)) if table else None
    return f"{match.group(1)}+checkout" if match else UNKNOWN
