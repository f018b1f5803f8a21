"""Saturation: the rate a point's requests were answered at against the rate they were offered at.

Both rates are taken over the same requests, those scheduled inside the measured window. A short
window with warm-up and cool-down cut must not read as saturation: a server that keeps up answers each
request a roughly constant time after it was scheduled, however long that time is, so its answers come
out as fast as the requests went in. A server that falls behind answers each request later than the one
before, and its answers take longer to come out than the requests took to go in.
"""

from __future__ import annotations

import math

import numpy as np

from loadtest.results import PointResult, RequestRecord

SATURATION_SHARE = 0.9  # open loop: answered below this share of the offered rate is saturated
STOP_ERROR_SHARE = 0.1  # a sweep stops after a point with more failed requests than this
CLOSED_LOOP_MIN_GAIN = 1.05  # closed loop: more concurrency bought less than this throughput gain
TREND_SIGNIFICANCE = 3.0  # standard deviations of the trend test before growing latency counts
MAX_TREND_SAMPLES = 600  # requests the trend is read from (thinned evenly beyond)


def answer_stretch(answered: list[RequestRecord]) -> float:
    """How much longer the answers took to come out than their requests took to be scheduled.

    A server that keeps up answers each request a stationary latency after its schedule: stretch 1.
    One that queues answers each later than the one before, and the latency from the schedule grows
    with the schedule: the stretch is 1 + that growth per scheduled second, which is offered rate /
    answered rate. The growth is the Theil-Sen slope (the median of the pairwise slopes) and counts
    only when the Mann-Kendall trend test puts it `TREND_SIGNIFICANCE` standard deviations above
    chance: both work on ranks, so a few slow answers in a short window neither fake a trend nor hide
    one, whatever the latency distribution. The test needs at least 8 requests in the window to reach
    that level; fewer can show refusals but not a queue.

    Args:
        answered: The successful requests scheduled in the window.

    Returns:
        The stretch: 1, or 1 + the latency growth when it is significant.
    """
    pairs = sorted(
        (r.scheduled_at_s, r.end_at_s - r.scheduled_at_s) for r in answered if r.end_at_s is not None
    )
    if len(pairs) < 3:
        return 1.0
    if len(pairs) > MAX_TREND_SAMPLES:  # pairwise work grows with the square: thin evenly in time
        pairs = [pairs[i] for i in np.linspace(0, len(pairs) - 1, MAX_TREND_SAMPLES).round().astype(int)]
    scheduled_s, latency_s = np.asarray(pairs, dtype=float).T
    first, second = np.triu_indices(len(pairs), k=1)
    apart_s = scheduled_s[second] - scheduled_s[first]
    later = apart_s > 0
    growth_s = latency_s[second][later] - latency_s[first][later]
    if not growth_s.size:
        return 1.0
    n = len(pairs)
    concordance = float(np.sign(growth_s).sum())
    deviation = math.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    if (concordance - 1) / deviation <= TREND_SIGNIFICANCE:  # with the continuity correction
        return 1.0
    return 1.0 + float(np.median(growth_s / apart_s[later]))


def answered_share(point: PointResult) -> float | None:
    """The answered rate over the offered rate of an open-loop point; None for a closed loop."""
    if point.offered_rps is None or point.offered_rps <= 0:
        return None
    return point.request_throughput / point.offered_rps


def is_saturated(point: PointResult) -> bool:
    """Whether an open-loop point answered well below the rate it was offered."""
    share = answered_share(point)
    return share is not None and share < SATURATION_SHARE


def stop_reason(point: PointResult, previous: PointResult | None) -> str | None:
    """Why a sweep should stop after `point`, or None.

    Args:
        point: The point just run, with its validity stamp.
        previous: The point before it in the sweep, if any.

    Returns:
        A sentence for the report, or None to go on.
    """
    name = f"point {point.index} ({point.load.label})"
    if point.measured and (point.measured - point.ok) / point.measured > STOP_ERROR_SHARE:
        return f"{name}: more than {STOP_ERROR_SHARE:.0%} of requests failed"
    if point.validity.saturated:
        return (
            f"{name}: saturated, {point.request_throughput:.2f} req/s answered of "
            f"{point.offered_rps:.2f} offered"
        )
    if (
        point.load.mode == "closed"
        and previous is not None
        and point.output_throughput < CLOSED_LOOP_MIN_GAIN * previous.output_throughput
    ):
        gain = CLOSED_LOOP_MIN_GAIN - 1
        return f"{name}: at capacity, throughput grew less than {gain:.0%} over the previous concurrency"
    return None
