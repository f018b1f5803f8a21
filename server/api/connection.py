"""How one client connection is served: uvicorn's httptools protocol, bounded in what a client can hold.

uvicorn applies `--h11-max-incomplete-event-size` only to its h11 protocol, and no uvicorn protocol counts
headers (vLLM passes `h11_max_header_count` to uvicorn, which ignores it). wattserve keeps httptools, the
faster parser, and enforces both limits here, in the callbacks the parser already makes, so a request
pays one comparison per read and per header and a streamed token pays nothing:

- a request head (request line and headers) still incomplete after `max_head_bytes`, or with more than
  `max_header_count` headers, gets 431 and the connection closes. As in h11, the size is checked while
  the head is incomplete, after each read: a head that ends within the read that crosses the limit is
  let through (one read is at most 256 KiB). Unbounded, httptools buffers an unterminated header by
  repeated concatenation: CPU quadratic in its size, on the event loop every request shares.
- a connection whose client has taken none of the pending response for `write_timeout_s` (the transport's
  buffer above its high-water mark and not shrinking) is aborted. The stream's task then sees the
  disconnect and its request scope closes as for any client that left.
- the connection's flow control is in every request's ASGI scope under `FLOW_EXTENSION`, so a stream can
  see that its client stopped reading and keep taking the engine's output meanwhile (`respond.py`);
- the request's own `send`, before any middleware wraps it, is there under `BODY_SEND_EXTENSION`: a
  stream sends its body chunks with it, one per token, past Starlette's wrappers, which only act on the
  response's start (they note that it started), which goes through them as usual.
"""

from __future__ import annotations

import asyncio
import http
import logging
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

logger = logging.getLogger(__name__)

FLOW_EXTENSION = "wattserve.flow"  # uvicorn's FlowControl of the connection: `.write_paused`
BODY_SEND_EXTENSION = "wattserve.body_send"  # the request cycle's own `send`, for response body chunks
HEADERS_TOO_LARGE = http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may hold: request head size and header count, and how long a stalled read."""

    max_head_bytes: int
    max_header_count: int
    write_timeout_s: float | None  # None: wait for the client for ever


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that breaks a limit."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head limits, a write timeout and the flow-control extension."""

    limits: ConnectionLimits  # set on the subclass `protocol_class` makes

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_bytes: int | None = 0  # bytes of the head being received; None while in a body
        self._heads_done = 0  # heads completed on this connection
        self._header_count = 0
        self._refusal: str | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._write_left = 0

    def data_received(self, data: bytes) -> None:
        """Parse, then refuse a head that is still incomplete past the size limit."""
        counting, heads_done = self._head_bytes is not None, self._heads_done
        super().data_received(data)
        # Counted only for reads that began and ended inside one head, so a body is never counted.
        if counting and self._head_bytes is not None and heads_done == self._heads_done:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head_bytes and not self.transport.is_closing():
                self._refusal = f"Request headers larger than {self.limits.max_head_bytes} bytes."
                self.send_400_response(self._refusal)

    def on_message_begin(self) -> None:
        """Start counting a new request's headers; hand the app the connection's flow control."""
        super().on_message_begin()
        self._header_count = 0
        self.scope["extensions"] = {FLOW_EXTENSION: self.flow}  # type: ignore[typeddict-unknown-key]

    def on_header(self, name: bytes, value: bytes) -> None:
        """Keep the header unless there are too many."""
        self._header_count += 1
        if self._header_count > self.limits.max_header_count:
            self._refusal = f"More than {self.limits.max_header_count} request headers."
            raise _Refused(self._refusal)  # httptools stops and reports a parser error
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """The head is whole: stop counting its bytes until the next request."""
        self._head_bytes = None
        self._heads_done += 1
        super().on_headers_complete()
        self.scope["extensions"][BODY_SEND_EXTENSION] = self.cycle.send  # type: ignore[typeddict-item]

    def on_message_complete(self) -> None:
        """The body is whole: the next bytes are the next request's head."""
        self._head_bytes = 0
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """Answer a broken head limit with 431 (uvicorn answers every parser error with 400)."""
        if self._refusal is None:
            super().send_400_response(msg)
            return
        logger.warning("refused a request from %s: %s", self.client, self._refusal)
        body = self._refusal.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s"
            % (HEADERS_TOO_LARGE.value, HEADERS_TOO_LARGE.phrase.encode(), len(body), body)
        )
        self.transport.close()

    def pause_writing(self) -> None:
        """The client is behind: from now on it must take some of the response every write timeout."""
        super().pause_writing()
        if self.limits.write_timeout_s is not None and self._write_timer is None:
            self._watch_writes()

    def resume_writing(self) -> None:
        """The client caught up."""
        super().resume_writing()
        self._stop_watching_writes()

    def connection_lost(self, exc: Exception | None) -> None:
        """Nothing more to watch."""
        self._stop_watching_writes()
        super().connection_lost(exc)

    def _watch_writes(self) -> None:
        assert self.limits.write_timeout_s is not None
        self._write_left = self.transport.get_write_buffer_size()
        self._write_timer = self.loop.call_later(self.limits.write_timeout_s, self._check_writes)

    def _stop_watching_writes(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _check_writes(self) -> None:
        self._write_timer = None
        if self.transport.is_closing() and self.transport.get_write_buffer_size() == 0:
            return
        if self.transport.get_write_buffer_size() < self._write_left:
            self._watch_writes()  # slow, not stalled: it took some since the last check
            return
        timeout_s = self.limits.write_timeout_s
        logger.warning("closing the connection of %s: it read nothing for %.0f s", self.client, timeout_s)
        # close() would wait for the buffer to drain, which is what this client never does.
        self.transport.abort()


def protocol_class(limits: ConnectionLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class to hand uvicorn (`http=`), bound to these limits."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
