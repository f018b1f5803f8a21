"""The Prometheus rules and Grafana dashboard in deploy/, read as data for the tests that check them.

PromQL is not parsed here, only scanned: string literals, label matchers, grouping clauses and range
selectors are taken out, and what remains is function names (followed by a parenthesis), keywords and
metric names. That is enough for the expressions we write, and it errs towards reporting a name.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "wattserve-rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "wattserve-rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "wattserve.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
# The labels of vLLM's per-engine series (PrometheusStatLogger's labelnames), which wattserve's /metrics
# passes on with vLLM's names.
VLLM_ENGINE_LABELS = frozenset({"model_name", "engine"})

_STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'""")
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
# Grafana's variables, replaced by what they stand for so the expression is plain PromQL.
_LABEL_VARIABLE = re.compile(r"\$\{?(adapter|tier)(?::[a-z]+)?\}?")
_INTERVAL_VARIABLE = re.compile(r"\$\{?__(?:rate_interval|interval|range)\}?")


@dataclass(frozen=True)
class Rule:
    """One recording or alerting rule."""

    group: str
    name: str
    expr: str
    alert: bool


def rules() -> list[Rule]:
    """Every rule of the rules file, in order."""
    document = yaml.safe_load(RULES.read_text())
    return [
        Rule(group["name"], rule.get("record") or rule["alert"], rule["expr"], "alert" in rule)
        for group in document["groups"]
        for rule in group["rules"]
    ]


def dashboard() -> dict:
    """The dashboard's JSON model."""
    return json.loads(DASHBOARD.read_text())


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, expression) for every query of every panel, variables left in."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def readme_expressions() -> list[str]:
    """The expressions in docs/metrics.md's ```promql blocks (an indented line continues the one above)."""
    expressions: list[str] = []
    for block in re.findall(r"```promql\n(.*?)```", METRICS_DOC.read_text(), flags=re.DOTALL):
        for line in block.splitlines():
            if not line.strip():
                continue
            if line[0].isspace() and expressions:
                expressions[-1] += "\n" + line
            else:
                expressions.append(line)
    return expressions


def vllm_metric_names() -> set[str]:
    """Every `vllm:` metric name the installed vLLM's Prometheus logger defines.

    Read from its source as text: importing vLLM takes seconds, and the names are literals there.
    """
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return set()
    loggers = Path(next(iter(spec.submodule_search_locations))) / "v1" / "metrics" / "loggers.py"
    return set(re.findall(r'"(vllm:[a-z_]+)"', loggers.read_text()))


def concrete(expr: str, window: str) -> str:
    """`expr` with the dashboard's variables replaced: every adapter and tier, `window` for intervals."""
    return _INTERVAL_VARIABLE.sub(window, _LABEL_VARIABLE.sub(".*", expr))


def metric_names(expr: str) -> set[str]:
    """The metric (or recorded series) names an expression selects."""
    text = _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", _STRING.sub('""', expr))
    text = _RANGE.sub(" ", _GROUPING.sub(" ", text))
    return {
        m.group(0)
        for m in _IDENTIFIER.finditer(text)
        if m.group(0) not in _KEYWORDS and not text[m.end() :].lstrip().startswith("(")
    }


def matcher_labels(expr: str) -> dict[str, set[str]]:
    """Label names used in each metric's matchers, by metric name."""
    found: dict[str, set[str]] = {}
    for name, body in _SELECTOR.findall(_STRING.sub('""', expr)):
        found.setdefault(name, set()).update(_MATCHER_LABEL.findall(body))
    return found


def grouping_labels(expr: str) -> set[str]:
    """Label names in `by`, `without`, `on`, `ignoring` and `group_*` clauses."""
    return {
        label.strip()
        for clause in _GROUPING.findall(_STRING.sub('""', expr))
        for label in clause.split(",")
        if label.strip()
    }
