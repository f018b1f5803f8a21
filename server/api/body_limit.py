"""A cap on request body size (413), enforced before the body is parsed.

Pure ASGI, wrapping only `receive`: a declared Content-Length over the cap is refused before a byte is
read; a chunked body is counted as it arrives and refused the moment it passes the cap.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.auth import route_path
from server.errors import PayloadTooLargeError, server_error_body

# Multipart framing around an uploaded file: boundaries, part headers, the purpose field.
MULTIPART_OVERHEAD = 64 * 2**10


class BodyLimitMiddleware:
    """Refuse request bodies larger than `max_bytes` with OpenAI's error body and status 413.

    An upload to `upload_path` may be as large as `max_upload_bytes` (its own flag) plus multipart
    framing; the files route checks the file itself against that flag.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, upload_path: str = "/v1/files", max_upload_bytes: int = 0
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_path = upload_path
        self.max_upload_bytes = max_upload_bytes

    def _error(self, limit: int, flag: str) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"The request body is larger than this server accepts ({limit} bytes; see {flag})."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with its body counted, or answer 413."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, flag = self.max_bytes, "--max-request-body-bytes"
        if route_path(scope) == self.upload_path and self.max_upload_bytes > self.max_bytes:
            limit, flag = self.max_upload_bytes + MULTIPART_OVERHEAD, "--max-batch-file-bytes"
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            body = json.dumps(server_error_body(self._error(limit, flag))).encode()
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
                if received > limit:
                    # FastAPI turns other exceptions raised while reading the body into a 400.
                    raise HTTPException(413, self._error(limit, flag).message)
            return message

        await self.app(scope, counted, send)
