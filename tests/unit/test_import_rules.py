"""The import rules of ARCHITECTURE.md, checked on the source tree."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", ["server", "adapters", "loadtest"])
def test_only_server_engine_imports_vllm(package: str) -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / package).rglob("*.py")
        if "vllm" in imported_roots(path) and not path.is_relative_to(ROOT / "server" / "engine")
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("package", "banned"), [("loadtest", {"server", "adapters"}), ("adapters", {"server", "fastapi"})]
)
def test_packages_keep_their_distance(package: str, banned: set[str]) -> None:
    offenders = [
        str(p.relative_to(ROOT)) for p in (ROOT / package).rglob("*.py") if imported_roots(p) & banned
    ]
    assert offenders == []
