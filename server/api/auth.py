"""Bearer keys, checked before anything else reads the request: the user key, and the admin key for adapters.

A pure ASGI middleware rather than route dependencies: FastAPI parses (and refuses) a body before it runs
dependencies, so a caller without a key learnt about the body's validity before being told it has no key.
It wraps the application call only, never `send`, so streamed responses pay nothing per chunk.
"""

from __future__ import annotations

import json
import secrets

from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import AuthenticationError, server_error_body

ADMIN_PATHS = ("/v1/adapters", "/v1/load_lora_adapter", "/v1/unload_lora_adapter")
DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")
# vLLM's tokenizer routes, outside /v1 as vLLM has them, take the user keys too: tokenizing is work.
TOKENIZER_PATHS = ("/tokenize", "/detokenize")


def route_path(scope: Scope) -> str:
    """The path routes see: under `--root-path`, a proxy may or may not have stripped the prefix."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


def _matches(token: str | None, expected: str) -> bool:
    # compare_digest: the comparison time does not tell how much of a guessed key was right.
    return token is not None and secrets.compare_digest(token.encode(), expected.encode())


def _matches_any(token: str | None, keys: tuple[str, ...]) -> bool:
    # Every key is compared, so the time taken does not tell which of several keys a guess came close to.
    matched = False
    for key in keys:
        matched |= _matches(token, key)
    return matched


class KeyMiddleware:
    """User keys on `/v1/*`, the tokenizer routes and the docs; the admin key on adapter management.

    The admin key, when set, and only it, opens adapter management.

    Any of several user keys is accepted, as in vLLM, so a key can be rotated without a gap. Without any
    key configured everything is open; `/health`, `/version` and `/metrics` are always open.
    """

    def __init__(self, app: ASGIApp, api_keys: tuple[str, ...], admin_key: str | None) -> None:
        self.app = app
        self.api_keys = api_keys
        self.admin_key = admin_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse the request with 401 unless it carries the key its path needs."""
        if scope["type"] == "http":
            error = self._refusal(route_path(scope), _bearer(scope))
            if error is not None:
                await _send_error(send, error)
                return
        await self.app(scope, receive, send)

    def _refusal(self, path: str, token: str | None) -> AuthenticationError | None:
        if path.startswith(ADMIN_PATHS) and self.admin_key is not None:
            return (
                None
                if _matches(token, self.admin_key)
                else AuthenticationError("Adapter management needs the admin key.")
            )
        if not self.api_keys or not path.startswith(("/v1/", *DOCS_PATHS, *TOKENIZER_PATHS)):
            return None
        if _matches_any(token, self.api_keys):
            return None
        if token is None:
            return AuthenticationError("Missing API key: send 'Authorization: Bearer <key>'.")
        return AuthenticationError("Incorrect API key provided.")


async def _send_error(send: Send, error: AuthenticationError) -> None:
    body = json.dumps(server_error_body(error)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": int(error.status), "headers": headers})
    await send({"type": "http.response.body", "body": body})
