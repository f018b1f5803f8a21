"""API-key check for the OpenAI routes."""

from __future__ import annotations

import secrets

from fastapi import Request

from server.errors import AuthenticationError
from server.state import get_state


async def require_api_key(request: Request) -> None:
    """Refuse the request unless it carries the configured key as a bearer token.

    Raises:
        AuthenticationError: A key is configured and the request's is missing or wrong.
    """
    expected = get_state(request).api_key
    if expected is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    # compare_digest: the comparison time does not tell how much of a guessed key was right.
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), expected.encode()):
        raise AuthenticationError(
            "Incorrect API key provided." if token else "Missing API key: send 'Authorization: Bearer <key>'."
        )
