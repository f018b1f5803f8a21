"""Bearer-key checks: the user key for the OpenAI routes, the admin key for adapter management."""

from __future__ import annotations

import secrets

from fastapi import Request

from server.errors import AuthenticationError
from server.state import get_state


def _key_matches(request: Request, expected: str) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    # compare_digest: the comparison time does not tell how much of a guessed key was right.
    return scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), expected.encode())


async def require_api_key(request: Request) -> None:
    """Refuse the request unless it carries the configured user key (no key configured: open).

    Raises:
        AuthenticationError: A key is configured and the request's is missing or wrong.
    """
    expected = get_state(request).api_key
    if expected is not None and not _key_matches(request, expected):
        has_key = "authorization" in request.headers
        raise AuthenticationError(
            "Incorrect API key provided."
            if has_key
            else "Missing API key: send 'Authorization: Bearer <key>'."
        )


async def require_admin_key(request: Request) -> None:
    """Adapter management: the admin key when one is set (the user key is then refused), else the user key.

    Raises:
        AuthenticationError: The request's key is missing or not the one required.
    """
    admin_key = get_state(request).admin_key
    if admin_key is None:
        await require_api_key(request)
    elif not _key_matches(request, admin_key):
        raise AuthenticationError("Adapter management needs the admin key.")
