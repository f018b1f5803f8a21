"""The plots of a run's HTML report, each a matplotlib `Figure` drawn with the object API.

Never pyplot, so writing a report leaves no global figure state behind and needs no display. Failed
points carry a red cross and saturated ones an orange ring, with a line at their load; every line has
markers, large enough to see when a sweep has a single point; labels stay inside their figure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from loadtest.results import PointResult, RunResult, energy_field

_Read = Callable[[PointResult], float | None]
FIGSIZE = (8.0, 4.5)
MARKER_SIZE = 6.0
SINGLE_MARKER_SIZE = 11.0  # one point is all a one-point sweep draws: it must stand out
FAILED_COLOR = "red"
SATURATED_COLOR = "darkorange"
SATURATED_LABEL = "saturated (○): answered under 90 % of offered"
FAILED_LABEL = "validity: fail (×)"
LABEL_OFFSET_PT = 6


def _figure(rows: int = 1) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(FIGSIZE[0], FIGSIZE[1] * (1 if rows == 1 else 1.5)), layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, list(axes)


def _x_label(points: Sequence[PointResult]) -> str:
    modes = {p.load.mode for p in points}
    if modes == {"closed"}:
        return "concurrency"
    return "offered load (req/s)" if modes == {"open"} else "offered load (req/s; concurrency when closed)"


def _xy(points: Iterable[PointResult], read: _Read) -> tuple[list[float], list[float]]:
    pairs = sorted((p.load.offered, v) for p in points if (v := read(p)) is not None)
    return [x for x, _ in pairs], [y for _, y in pairs]


def _series(
    ax: Axes,
    points: Sequence[PointResult],
    read: _Read,
    label: str,
    *,
    scale: float = 1.0,
    **style: object,
) -> bool:
    """A line against load, failed and saturated points marked on it. Returns whether it drew anything."""
    xs, ys = _xy(points, read)
    if not xs:
        return False
    size = SINGLE_MARKER_SIZE if len(xs) == 1 else MARKER_SIZE
    ax.plot(xs, [y * scale for y in ys], marker="o", markersize=size, label=label, **style)
    fx, fy = _xy((p for p in points if p.validity.verdict == "fail"), read)
    ax.scatter(fx, [y * scale for y in fy], marker="x", s=90, color=FAILED_COLOR, zorder=5)
    sx, sy = _xy((p for p in points if p.validity.saturated), read)
    ring = {"facecolors": "none", "edgecolors": SATURATED_COLOR, "linewidths": 2, "zorder": 5}
    ax.scatter(sx, [y * scale for y in sy], marker="o", s=(2.2 * size) ** 2, **ring)
    return True


def _mark_loads(ax: Axes, points: Sequence[PointResult], legend: bool = True) -> None:
    """A vertical line at the load of each failed and each saturated point."""
    marked = (
        (lambda p: p.validity.verdict == "fail", FAILED_COLOR, ":", FAILED_LABEL),
        (lambda p: p.validity.saturated, SATURATED_COLOR, "--", SATURATED_LABEL),
    )
    for selected, color, style, label in marked:
        for i, x in enumerate(sorted({p.load.offered for p in points if selected(p)})):
            first = legend and i == 0
            ax.axvline(x, color=color, linestyle=style, alpha=0.7, label=label if first else None)


def _frame_x(ax: Axes, points: Sequence[PointResult]) -> None:
    # Alone, a load would sit on a hair-thin axis around itself; from 0 to twice it reads as a load.
    loads = {p.load.offered for p in points}
    if len(loads) == 1 and (x := loads.pop()) > 0:
        ax.set_xlim(0, 2 * x)


def _log_if_wide(ax: Axes) -> None:
    # Latencies and J/token span decades across a sweep; a log axis keeps the small ones readable.
    ys = [y for line in ax.get_lines() for y in line.get_ydata()]
    if ys and min(ys) > 0 and max(ys) / min(ys) > 20:
        ax.set_yscale("log")


def plot_latency(result: RunResult) -> Figure | None:
    """TTFT, ITL and end-to-end percentiles against load; None when no point has latencies."""
    fig, (ax,) = _figure()
    pts = result.points
    drawn = [
        _series(ax, pts, lambda p: p.ttft_s.p50, "TTFT p50", scale=1e3),
        _series(ax, pts, lambda p: p.ttft_s.p99, "TTFT p99", scale=1e3),
        _series(ax, pts, lambda p: p.itl_s.p50, "ITL p50", scale=1e3),
        _series(ax, pts, lambda p: p.itl_s.p99, "ITL p99", scale=1e3),
        _series(ax, pts, lambda p: p.e2e_s.p99, "e2e p99", scale=1e3),
    ]
    if not any(drawn):
        return None
    _log_if_wide(ax)
    _mark_loads(ax, pts)
    _frame_x(ax, pts)
    ax.set(xlabel=_x_label(pts), ylabel="latency (ms)", title="Latency vs load")
    ax.legend(fontsize=8)
    return fig


def plot_throughput(result: RunResult) -> Figure:
    """Requests/s (answered and offered) and output tokens/s against load, each on its own panel."""
    fig, (requests, tokens) = _figure(rows=2)
    pts = result.points
    _series(requests, pts, lambda p: p.request_throughput, "answered req/s", color="C0")
    offered_x, offered_y = _xy(pts, lambda p: p.offered_rps)
    if offered_x:  # closed loops offer no rate
        tick = {"marker": "_", "markersize": 2 * (SINGLE_MARKER_SIZE if len(offered_x) == 1 else MARKER_SIZE)}
        requests.plot(offered_x, offered_y, color="grey", linestyle="--", label="offered req/s", **tick)
    _series(tokens, pts, lambda p: p.output_throughput, "output tok/s", color="C2")
    for ax in (requests, tokens):
        _mark_loads(ax, pts, legend=ax is requests)
        _frame_x(ax, pts)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    requests.set(ylabel="requests/s", title="Throughput vs load")
    tokens.set(xlabel=_x_label(pts), ylabel="output tokens/s")
    return fig


def _energy_title(result: RunResult, title: str) -> str:
    estimated = any(p.energy is not None and p.energy.source == "estimated" for p in result.points)
    return f"{title} (estimated, not measured)" if estimated else title


def plot_energy(result: RunResult) -> Figure | None:
    """J/output-token, total and above idle, against load; None without any."""
    fig, (ax,) = _figure()
    pts = [p for p in result.points if p.energy is not None]
    total = _series(ax, pts, energy_field("joules_per_output_token"), "J/output token")
    above = _series(ax, pts, energy_field("joules_per_output_token_above_idle"), "above idle")
    if not (total or above):
        return None
    _log_if_wide(ax)
    _mark_loads(ax, pts)
    _frame_x(ax, pts)
    ax.set(xlabel=_x_label(pts), ylabel="joules per output token")
    ax.set_title(_energy_title(result, "Energy per output token vs load"))
    ax.legend(fontsize=8)
    return fig


def _label_inward(ax: Axes, text: str, x: float, y: float) -> None:
    """Annotate a point on the side facing the middle of the axes, so the text never leaves them."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    log_y = ax.get_yscale() == "log"
    right = x > (x0 + x1) / 2
    top = (y > (y0 * y1) ** 0.5) if log_y and y0 > 0 else (y > (y0 + y1) / 2)
    offset = (-LABEL_OFFSET_PT if right else LABEL_OFFSET_PT, -LABEL_OFFSET_PT if top else LABEL_OFFSET_PT)
    ax.annotate(
        text,
        (x, y),
        textcoords="offset points",
        xytext=offset,
        ha="right" if right else "left",
        va="top" if top else "bottom",
        fontsize=7,
    )


def plot_front(result: RunResult) -> Figure | None:
    """J/output-token against p99 latency from the schedule, with the front and the best point."""

    def xy(p: PointResult) -> tuple[float, float] | None:
        x, y = p.e2e_from_schedule_s.p99, energy_field("joules_per_output_token")(p)
        return None if x is None or y is None else (x, y)

    placed = {p.index: (p, xy_) for p in result.points if (xy_ := xy(p)) is not None}
    if not placed:
        return None
    fig, (ax,) = _figure()
    groups = (
        ("valid", lambda p: p.validity.verdict != "fail" and not p.validity.saturated, {"color": "C0"}),
        (
            "saturated (off the front)",
            lambda p: p.validity.saturated and p.validity.verdict != "fail",
            {"facecolors": "none", "edgecolors": SATURATED_COLOR, "linewidths": 2},
        ),
        (
            "validity: fail (hollow)",
            lambda p: p.validity.verdict == "fail",
            {"facecolors": "none", "edgecolors": "grey"},
        ),
    )
    size = SINGLE_MARKER_SIZE**2 if len(placed) == 1 else 50
    for label, selected, style in groups:
        group = [xy_ for p, xy_ in placed.values() if selected(p)]
        if group:
            ax.scatter([x for x, _ in group], [y for _, y in group], s=size, label=label, **style)
    front = sorted(placed[i][1] for i in result.pareto if i in placed)
    if len(front) > 1:  # a front of one point is that point, already drawn
        ax.plot([x for x, _ in front], [y for _, y in front], color="C1", label="Pareto front")
    if result.best in placed:
        bx, by = placed[result.best][1]
        ax.scatter([bx], [by], marker="*", s=300, color="gold", edgecolors="black", zorder=6, label="best")
    ax.margins(0.15)
    ax.set(xlabel="p99 end-to-end latency from schedule (s)", ylabel="joules per output token")
    ax.set_title(_energy_title(result, "Energy vs tail latency"))
    ax.legend(fontsize=8)
    # Limits are final once everything is drawn: only then can each label face inwards.
    for p, (x, y) in placed.values():
        _label_inward(ax, p.load.label + (" (saturated)" if p.validity.saturated else ""), x, y)
    return fig
