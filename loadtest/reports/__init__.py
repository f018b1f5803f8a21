"""Reports of a load-test run: the terminal summary, JSON/CSV/JSONL files, one HTML page, and `compare`."""

from loadtest.reports.compare import (
    ComparedPoint,
    MetricComparison,
    compare_markdown,
    compare_results,
    render_compare,
)
from loadtest.reports.console import render_summary
from loadtest.reports.files import (
    read_json,
    write_breakdown_csv,
    write_csv,
    write_json,
    write_requests_jsonl,
)
from loadtest.reports.html import write_html

__all__ = [
    "ComparedPoint",
    "MetricComparison",
    "compare_markdown",
    "compare_results",
    "read_json",
    "render_compare",
    "render_summary",
    "write_breakdown_csv",
    "write_csv",
    "write_html",
    "write_json",
    "write_requests_jsonl",
]
