"""Find Prometheus and promtool on PATH, or install Debian's `prometheus` package when the tests may.

Installing is `tests/debian_packages.py`'s (as root with apt-get, the package's own service kept from
starting); otherwise the tests that need the binaries are skipped with the reason.
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass

from tests.debian_packages import find_or_install


@dataclass(frozen=True)
class Binaries:
    """Paths of the two binaries; `missing` says why they are not there instead."""

    prometheus: str | None = None
    promtool: str | None = None
    missing: str | None = None


def _found() -> Binaries | None:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    return Binaries(prometheus, promtool) if prometheus and promtool else None


@functools.cache
def binaries() -> Binaries:
    """The binaries, installing them once per test run if allowed and needed."""
    lookup = find_or_install("prometheus", "prometheus/promtool", _found)
    return lookup.found or Binaries(missing=lookup.missing)
