"""A server's `/v1/energy` read over and over, each read with the wall-clock moments around it.

Metered energy grows while a server idles, so a figure another reader took (a Prometheus scrape) cannot
be compared with one read at another moment; it can be bracketed. The server answers each read from a
snapshot begun after the read arrived, and its energy counters only grow, so a read answered before a
scrape began reads no more than the scrape did, and a read sent after the scrape ended no less.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class Read:
    """One `/v1/energy` read: when its request left, when its answer was in (Unix seconds), what it said."""

    sent_s: float
    answered_s: float
    joules: float  # joules_since_start


class EnergyReads:
    """The reads of one server's `/v1/energy`, in order, while `reading()` runs."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self._base_url = base_url
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._reads: list[Read] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def _run(self) -> None:
        # No pause between reads: the server answers at most one snapshot per scrape interval, so the
        # reads pace themselves.
        with httpx.Client(base_url=self._base_url, headers=self._headers, timeout=60) as http:
            while not self._stop.is_set():
                sent_s = time.time()
                response = http.get("/v1/energy")
                response.raise_for_status()
                read = Read(sent_s, time.time(), response.json()["joules_since_start"])
                with self._lock:
                    self._reads.append(read)

    @contextmanager
    def reading(self) -> Iterator[EnergyReads]:
        """Read in a thread of its own until the block ends."""
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=120)

    def around(self, start_s: float, end_s: float) -> tuple[Read, Read] | None:
        """The last read answered before `start_s` and the first sent after `end_s`, or None."""
        with self._lock:
            before = [read for read in self._reads if read.answered_s < start_s]
            after = [read for read in self._reads if read.sent_s > end_s]
        return (before[-1], after[0]) if before and after else None
