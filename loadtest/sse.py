"""Incremental server-sent-events parsing over arbitrary network reads.

Hand-rolled rather than httpx-sse because the client stamps each read's arrival time before any parsing,
and an event may be split across reads (or several may arrive in one): `feed` returns the complete events'
data fields and keeps the rest for the next read.
"""

from __future__ import annotations


class SseParser:
    """Feed raw bytes as they arrive; get the `data` of each complete event."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[str]:
        """Data of every event completed by `chunk` (multi-line data joined with newlines)."""
        self._buffer += chunk
        if b"\r" in self._buffer:
            # A CR at the very end may be half of a CRLF split across reads: keep it for the next read.
            tail = b"\r" if self._buffer.endswith(b"\r") else b""
            body = self._buffer[: len(self._buffer) - len(tail)]
            self._buffer = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        *events, self._buffer = self._buffer.split(b"\n\n")
        return [data for event in events if (data := _event_data(event)) is not None]

    def finish(self) -> list[str]:
        """At the end of the body: a held-back CR was a line end; an unterminated event is dropped."""
        if not self._buffer.endswith(b"\r"):
            return []
        return self.feed(b"\n")  # completes the held-back CR as a CRLF

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet complete."""
        return self._buffer


def _event_data(event: bytes) -> str | None:
    lines = []
    for raw in event.split(b"\n"):
        if raw.startswith(b"data:"):
            value = raw[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    # Comment-only events (": ping") and events without data carry nothing for the client.
    return b"\n".join(lines).decode() if lines else None
