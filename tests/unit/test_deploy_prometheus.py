"""deploy/prometheus and deploy/grafana: promtool accepts and passes the rules, every rule has a test,
and every metric and label they name is one the server exports.

The exported names come from `ServerMetrics` built on a fresh registry, the one definition the server's
`/metrics` renders, so a renamed metric or label fails here rather than as an empty panel; the `vllm:`
names it passes on from vLLM, from the installed vLLM's source.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from server.observability.metrics import BASE_LABEL, ServerMetrics
from tests import deploy_files
from tests.prometheus_install import binaries

SCRAPE_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series


@pytest.fixture(scope="module")
def promtool() -> str:
    found = binaries()
    if found.promtool is None:
        pytest.skip(f"promtool unavailable: {found.missing}")
    return found.promtool


def run(*command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd=cwd)


def test_promtool_checks_the_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(deploy_files.RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_passes_the_rule_tests(promtool: str) -> None:
    # The test file names the rules file relative to itself.
    result = run(promtool, "test", "rules", deploy_files.RULE_TESTS.name, cwd=deploy_files.RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_expression_parses(promtool: str, tmp_path: Path) -> None:
    # promtool has no expression checker of its own here: it parses rule files, so each query becomes one.
    queries = [deploy_files.concrete(expr, "5m") for _, expr in deploy_files.dashboard_expressions()]
    group = {"name": "dashboard", "rules": [{"record": f"q{i}", "expr": q} for i, q in enumerate(queries)]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [group]}))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_has_a_test_and_every_alert_a_firing_and_a_quiet_case() -> None:
    tests = yaml.safe_load(deploy_files.RULE_TESTS.read_text())["tests"]
    tested_exprs = " ".join(t["expr"] for group in tests for t in group.get("promql_expr_test", []))
    alert_cases = [t for group in tests for t in group.get("alert_rule_test", [])]
    for rule in deploy_files.rules():
        if rule.alert:
            outcomes = {bool(case["exp_alerts"]) for case in alert_cases if case["alertname"] == rule.name}
            assert outcomes == {True, False}, f"{rule.name}: firing and quiet cases, got {outcomes}"
        else:
            assert rule.name in tested_exprs, f"recording rule {rule.name} has no promql_expr_test"


def exported_labels() -> dict[str, set[str]]:
    """Every sample name the server's metrics render, with its label names."""
    registry = CollectorRegistry()
    metrics = ServerMetrics(registry, "estimated", ["cpu"])
    metrics.adapter_added(BASE_LABEL)  # labelled series appear once their children exist
    metrics.governor_decided("hold", "steady", 0.0, 1)
    exported: dict[str, set[str]] = {}
    for family in registry.collect():
        for sample in family.samples:
            exported.setdefault(sample.name, set()).update(sample.labels)
    return exported


def expressions() -> list[tuple[str, str]]:
    named = [(f"rule {rule.name}", rule.expr) for rule in deploy_files.rules()]
    dashboard = [(f"panel {title!r}", expr) for title, expr in deploy_files.dashboard_expressions()]
    return named + dashboard


@pytest.mark.parametrize(("where", "expr"), expressions())
def test_expressions_name_only_exported_metrics_and_labels(where: str, expr: str) -> None:
    exported = exported_labels()
    recorded = {rule.name for rule in deploy_files.rules() if not rule.alert}
    vllm = dict.fromkeys(deploy_files.vllm_metric_names(), set(deploy_files.VLLM_ENGINE_LABELS))
    known = {**exported, **vllm, "up": set()}
    names = deploy_files.metric_names(deploy_files.concrete(expr, "5m"))
    assert names, f"{where}: no metric found in {expr!r}"
    assert names <= set(known) | recorded, f"{where}: not exported: {names - set(known) - recorded}"
    for name, labels in deploy_files.matcher_labels(expr).items():
        if name in known:
            assert labels <= known[name] | SCRAPE_LABELS, f"{where}: {name} has no {labels - known[name]}"
    available = set().union(*(known.get(name, set()) for name in names)) | SCRAPE_LABELS
    if not names & recorded:
        grouping = deploy_files.grouping_labels(expr)
        assert grouping <= available, f"{where}: grouped by missing labels {grouping - available}"


def test_dashboard_uses_the_datasource_variable_and_has_adapter_and_tier_variables() -> None:
    dashboard = deploy_files.dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("adapter", "tier"):
        assert variables[name]["includeAll"]
        assert variables[name]["allValue"] == ".*"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        for target in [panel, *panel.get("targets", [])]:
            if "datasource" in target:
                assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    filtered = [expr for _, expr in deploy_files.dashboard_expressions() if "$adapter" in expr]
    assert all('tier=~"$tier"' in expr for expr in filtered)
