"""The import rules of docs/architecture.md, checked on the source tree.

Every import counts, wherever it is written (module top, function body, `if TYPE_CHECKING:`), since each
is a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("server", "adapters", "loadtest", "benchmarks")
WEB_FRAMEWORK = {"fastapi", "starlette", "uvicorn"}

# The server's layers, lowest first (docs/architecture.md): a module imports modules of its own
# package or of a strictly lower layer, never higher.
SERVER_LAYERS = {
    "server.tiers": 0,
    "server.outcome": 0,
    "server.settings": 0,
    "server.default_model": 0,
    "server.unencodable": 0,
    "server.request_fields": 0,
    "server.protocol": 1,
    "server.answers": 1,
    "server.responses_items": 1,
    "server.responses_wire": 2,
    "server.batch_wire": 2,
    "server.responses_answers": 2,
    "server.errors": 2,
    # Hardware readers knowing nothing of the server, below the engine so its workers meter with them;
    # listed before `server.energy`, which would match them first.
    "server.energy.meters": 2,
    "server.engine": 3,
    "server.energy": 3,
    "server.storage": 3,
    "server.policy": 4,
    "server.observability": 4,
    "server.serving": 5,
    "server.runtime": 6,
    "server.api": 7,
    "server.cli_values": 7,
    "server.cli_flags": 8,
    "server.compose": 8,
    "server.compose_energy": 7,
    "server.vllm_flags": 8,
    "server.cli": 9,
    "server.__main__": 10,
}
# Where these libraries may be imported: vLLM nowhere but the engine boundary (in every package); the
# web framework and Prometheus's client, inside the server, only in these layers (the harness, a client
# of any server, has its own stub server and scraper).
ALLOWED = {
    "vllm": ("server.engine",),
    "xgrammar": ("server.engine",),  # vLLM's grammar compiler, run by the engine's grammar gate
    "fastapi": ("server.api", "server.compose"),
    "starlette": ("server.api",),
    "uvicorn": ("server.api",),
    # The governor and the rest of the server read their own state; only exporters touch collectors.
    "prometheus_client": ("server.observability", "server.api", "server.compose", "server.compose_energy"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


SOURCES = {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports_of(path: Path) -> Iterator[str]:
    """Every absolute module name imported in the file (`from a.b import c` gives `a.b.c` if a module)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            assert node.module is not None
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                yield full if full in SOURCES else node.module


IMPORTS = {name: sorted(set(imports_of(path))) for name, path in SOURCES.items()}


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> tuple[str, int]:
    for prefix, layer in SERVER_LAYERS.items():
        if within(module, prefix):
            return prefix, layer
    raise AssertionError(f"{module} belongs to no layer: add it to docs/architecture.md and SERVER_LAYERS")


def test_every_server_module_has_a_layer() -> None:
    for module in SOURCES:
        if within(module, "server") and module != "server":
            layer_of(module)


def layer_breaks() -> list[str]:
    breaks = []
    for module, imported in IMPORTS.items():
        if not within(module, "server") or module == "server":
            continue
        package, layer = layer_of(module)
        for target in imported:
            if within(target, "server") and target != "server":
                target_package, target_layer = layer_of(target)
                if target_package != package and target_layer >= layer:
                    breaks.append(f"{module} -> {target}")
    return breaks


def test_server_modules_import_only_lower_layers() -> None:
    assert layer_breaks() == []


@pytest.mark.parametrize("library", sorted(ALLOWED))
def test_libraries_stay_in_their_layer(library: str) -> None:
    offenders = [
        f"{module} -> {target}"
        for module, imported in IMPORTS.items()
        for target in imported
        if within(target, library)
        and (library in ("vllm", "xgrammar") or within(module, "server"))
        and not any(within(module, place) for place in ALLOWED[library])
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("package", "banned"),
    [
        # The harness must work against any OpenAI server, so it knows none of ours.
        ("loadtest", {"server", "adapters", "benchmarks"}),
        ("adapters", {"server", "benchmarks", *WEB_FRAMEWORK}),
        ("server", {"benchmarks", "loadtest"}),
    ],
)
def test_packages_keep_their_distance(package: str, banned: set[str]) -> None:
    offenders = [
        f"{module} -> {target}"
        for module, imported in IMPORTS.items()
        if within(module, package)
        for target in imported
        if target.split(".")[0] in banned
    ]
    assert offenders == []


def cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, []):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, []):
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def project_graph() -> dict[str, list[str]]:
    return {module: [t for t in imported if t in SOURCES] for module, imported in IMPORTS.items()}


def test_no_import_cycles() -> None:
    assert cycles(project_graph()) == []


def test_the_rules_catch_what_they_forbid() -> None:
    """Each rule fails on a break of its kind, so a green run means something."""
    assert cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert layer_of("server.energy.ledger") == ("server.energy", 3)
    assert layer_of("server.api.routes.chat")[1] > layer_of("server.serving.scope")[1]
    IMPORTS["server.errors"].append("server.api.errors")
    try:
        assert layer_breaks() == ["server.errors -> server.api.errors"]
    finally:
        IMPORTS["server.errors"].remove("server.api.errors")
