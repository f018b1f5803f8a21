"""What the published wheel holds: the server, the adapter catalogue and the harness, never our benchmarks."""

from __future__ import annotations

from pathlib import Path

import pytest
from setuptools.config.pyprojecttoml import read_configuration

ROOT = Path(__file__).resolve().parents[2]


def published_packages(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The packages setuptools puts in the wheel, found by the rules pyproject.toml gives it."""
    monkeypatch.chdir(ROOT)  # setuptools finds packages from the working directory
    return read_configuration(ROOT / "pyproject.toml")["tool"]["setuptools"]["packages"]


def test_the_wheel_holds_the_harness_and_no_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    packages = published_packages(monkeypatch)
    assert {"server", "server.api", "adapters", "loadtest", "loadtest.reports"} <= set(packages)
    assert [name for name in packages if name.split(".")[0] not in {"server", "adapters", "loadtest"}] == []


def test_no_benchmark_module_hides_in_the_harness() -> None:
    """The project's benchmarks live in benchmarks/; none of their modules is left in loadtest/."""
    benchmarks = {path.stem for path in (ROOT / "benchmarks").glob("*.py")} - {"__init__"}
    harness = {path.stem for path in (ROOT / "loadtest").rglob("*.py")}
    assert benchmarks, "benchmarks/ holds the project's benchmarks"
    assert benchmarks & harness == set()
