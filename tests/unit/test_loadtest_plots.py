"""The report's plots as matplotlib figures: panels, markers, saturation marks, labels inside the figure."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from loadtest.reports.plots import (
    MARKER_SIZE,
    SATURATED_LABEL,
    plot_energy,
    plot_front,
    plot_latency,
    plot_throughput,
)
from loadtest.results import LoadSpec, RunResult
from tests.unit.test_loadtest_report_flags import long_labels, saturated_result
from tests.unit.test_loadtest_reports import make_result

Plot = Callable[[RunResult], Figure | None]
PLOTS: tuple[Plot, ...] = (plot_latency, plot_throughput, plot_energy, plot_front)


def one_point(result: RunResult) -> RunResult:
    result.points = result.points[:1]
    result.pareto, result.best = [0], 0
    return result


def test_throughput_has_requests_and_tokens_on_separate_panels() -> None:
    fig = plot_throughput(make_result())
    assert len(fig.axes) == 2
    top, bottom = fig.axes
    # Twin axes share one box; panels sit one above the other.
    assert top.get_position().y0 >= bottom.get_position().y1
    top_labels = {line.get_label() for line in top.get_lines()}
    bottom_labels = {line.get_label() for line in bottom.get_lines()}
    assert {"answered req/s", "offered req/s"} <= top_labels
    assert "output tok/s" in bottom_labels
    assert "output tok/s" not in top_labels
    assert top.get_ylabel() == "requests/s"
    assert bottom.get_ylabel() == "output tokens/s"


@pytest.mark.parametrize("plot", PLOTS, ids=lambda p: p.__name__)
@pytest.mark.parametrize("shape", ["sweep", "one point", "long labels"])
def test_every_text_stays_inside_its_figure(plot: Plot, shape: str) -> None:
    result = {"sweep": make_result, "one point": lambda: one_point(make_result())}.get(
        shape, lambda: long_labels(saturated_result())
    )()
    fig = plot(result)
    assert fig is not None
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    # Everything drawn (ticks in view, labels, titles, legends, annotations), in inches.
    drawn = fig.get_tightbbox(canvas.get_renderer())
    page = fig.bbox_inches
    tolerance_in = 0.01
    assert drawn.x0 >= page.x0 - tolerance_in
    assert drawn.y0 >= page.y0 - tolerance_in
    assert drawn.x1 <= page.x1 + tolerance_in
    assert drawn.y1 <= page.y1 + tolerance_in
    # A point's label stays inside its axes, off the spines, the title and the neighbouring panel.
    renderer = canvas.get_renderer()
    for ax in fig.axes:
        frame = ax.get_window_extent(renderer)
        for label in ax.texts:
            box = label.get_window_extent(renderer)
            assert frame.x0 - 1 <= box.x0 <= box.x1 <= frame.x1 + 1, label.get_text()
            assert frame.y0 - 1 <= box.y0 <= box.y1 <= frame.y1 + 1, label.get_text()
    if plot is plot_front:  # one label per placed point, none dropped
        assert len([t for ax in fig.axes for t in ax.texts]) == len(result.points)


@pytest.mark.parametrize("plot", PLOTS, ids=lambda p: p.__name__)
def test_a_one_point_sweep_draws_large_markers_away_from_the_edges(plot: Plot) -> None:
    result = one_point(make_result())
    fig = plot(result)
    assert fig is not None
    drawn = 0
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_label().startswith("_") or len(line.get_xdata()) != 1:
                continue
            assert line.get_marker() not in ("", "None", None, ","), line.get_label()
            assert line.get_markersize() > MARKER_SIZE, line.get_label()
            drawn += 1
        for collection in ax.collections:
            if len(collection.get_offsets()):
                assert min(collection.get_sizes()) >= MARKER_SIZE**2
                drawn += 1
        if plot is not plot_front:
            (lo, hi), x = ax.get_xlim(), result.points[0].load.offered
            assert 0.2 < (x - lo) / (hi - lo) < 0.8
    assert drawn


def test_saturated_points_are_ringed_and_named_on_every_load_plot() -> None:
    result = saturated_result()
    saturated = result.points[1]
    for plot in (plot_latency, plot_throughput, plot_energy):
        fig = plot(result)
        legend_texts = [
            t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()
        ]
        assert SATURATED_LABEL in legend_texts, plot.__name__
        rings = [
            c
            for ax in fig.axes
            for c in ax.collections
            if len(c.get_offsets()) and c.get_offsets()[0][0] == saturated.load.offered
        ]
        assert rings, plot.__name__
    front = plot_front(result)
    labels = [t.get_text() for t in front.axes[0].texts]
    assert f"{saturated.load.label} (saturated)" in labels
    legend = [t.get_text() for t in front.axes[0].get_legend().get_texts()]
    assert "saturated (off the front)" in legend


def test_a_closed_loop_has_no_offered_rate_line() -> None:
    result = make_result()
    for i, point in enumerate(result.points):
        point.load = LoadSpec(mode="closed", concurrency=4 * (i + 1))
        point.offered_rps = None
    top = plot_throughput(result).axes[0]
    assert "offered req/s" not in {line.get_label() for line in top.get_lines()}
