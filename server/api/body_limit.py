"""A cap on request body size (413), enforced before the body is parsed.

Pure ASGI, wrapping only `receive`: a declared Content-Length over the cap is refused before a byte is
read; a chunked body is counted as it arrives and refused the moment it passes the cap.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import PayloadTooLargeError, server_error_body


class BodyLimitMiddleware:
    """Refuse request bodies larger than `max_bytes` with OpenAI's error body and status 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"The request body is larger than this server accepts ({self.max_bytes} bytes; "
            "see --max-request-body-bytes)."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with its body counted, or answer 413."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            body = json.dumps(server_error_body(self._error())).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            # The unread body follows on this connection: close it rather than parse 20 MB to discard it.
            headers.append((b"connection", b"close"))
            await send({"type": "http.response.start", "status": 413, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI turns other exceptions raised while reading the body into a 400.
                    raise HTTPException(413, self._error().message)
            return message

        await self.app(scope, counted, send)
