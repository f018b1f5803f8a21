"""Did other clients keep their latency while one client misbehaved? Small requests, timed, as a ratio.

A check of the same small requests with and without the misbehaviour, on the same server in the same
run: the ratio of their medians says whether one client stalled the others, whatever the machine's
speed. The bound is wide (a stall is tens of times, sharing two cores is a few times).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

from tests.e2e.conftest import MODEL, Server

# A stall shows as tens of times the undisturbed latency; sharing the cores with the attack costs a few.
STALL_RATIO = 5.0
SMALL_CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def small_request_seconds(server: Server, count: int = 8) -> list[float]:
    """Send `count` small chat requests one after another and return each one's latency."""
    seconds = []
    with server.http() as http:
        for _ in range(count):
            started = time.monotonic()
            response = http.post("/v1/chat/completions", json=SMALL_CHAT)
            seconds.append(time.monotonic() - started)
            assert response.status_code == 200, response.text
    return seconds


def latency_ratio(server: Server, misbehave: Callable[[threading.Event], None], count: int = 8) -> float:
    """Median small-request latency while `misbehave` runs, over the median without it.

    `misbehave(started)` runs on a thread and sets `started` once the misbehaviour is under way; the
    small requests start then. The thread is joined before returning.
    """
    baseline = statistics.median(small_request_seconds(server, count))
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            misbehave(started)
        except BaseException as err:  # noqa: BLE001 - reported by the test's own thread below
            failure.append(err)
            started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(60), "the misbehaviour never got under way"
    disturbed = statistics.median(small_request_seconds(server, count))
    thread.join(300)
    if failure:
        raise failure[0]
    return disturbed / baseline


def ratio_tolerable(ratio: float) -> bool:
    """Whether the other clients' latency stayed within what sharing the machine explains."""
    return ratio <= STALL_RATIO
