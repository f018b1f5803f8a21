"""How uvicorn serves the app: its configuration, and a server that tells the app when a signal arrives."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from types import FrameType

import uvicorn
from starlette.types import ASGIApp
from uvicorn.logging import TRACE_LOG_LEVEL

from server.api.connection import ConnectionLimits, protocol_class
from server.settings import ServerSettings


def log_level_number(name: str) -> int:
    """The logging level a `--uvicorn-log-level` name stands for, uvicorn's `trace` (below debug) included."""
    logging.addLevelName(TRACE_LOG_LEVEL, "TRACE")
    return logging.getLevelName(name.upper())


def uvicorn_config(app: ASGIApp, settings: ServerSettings) -> uvicorn.Config:
    """How uvicorn serves the app: address, TLS, access log, graceful-shutdown bound, connection limits."""
    limits = ConnectionLimits(
        max_head_bytes=settings.h11_max_incomplete_event_size,
        max_header_count=settings.h11_max_header_count,
        write_timeout_s=settings.write_timeout_seconds or None,
    )
    # Only when set: uvicorn's own default is a cipher string, not None.
    ciphers = {"ssl_ciphers": settings.ssl_ciphers} if settings.ssl_ciphers is not None else {}
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        uds=settings.uds,
        loop="uvloop",
        http=protocol_class(limits),
        log_level=settings.log_level,
        access_log=not settings.disable_uvicorn_access_log,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        ssl_keyfile=settings.ssl_keyfile,
        ssl_certfile=settings.ssl_certfile,
        ssl_ca_certs=settings.ssl_ca_certs,
        ssl_cert_reqs=settings.ssl_cert_reqs,
        **ciphers,
    )


class DrainingServer(uvicorn.Server):
    """uvicorn's server, telling the application when a shutdown signal arrives (not only at its end)."""

    def __init__(self, config: uvicorn.Config, on_signal: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_signal = on_signal

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """A first SIGTERM/SIGINT drains; a second one forces the exit, as in uvicorn."""
        first = not self.should_exit
        super().handle_exit(sig, frame)
        if first and sig in (signal.SIGTERM, signal.SIGINT):
            self._on_signal()
