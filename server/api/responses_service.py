"""Stored responses and background runs: what `/v1/responses` keeps between requests.

A finished response is written before its last event or its body goes out (`save` queues the write on
the store's one worker, so any later read finds it). A background response runs as a task of its own,
stored as `queued`, then `in_progress`, then as it ends (completed, incomplete, failed, cancelled); at
startup, responses a dead process left unfinished are marked failed, so no poller waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

from server.errors import ResponseNotFoundError, ServerError
from server.responses_answers import Response, ResponseError
from server.storage.response_store import ResponseStore, ResponseStoreError, StoredResponse

logger = logging.getLogger(__name__)

RESTARTED = {"code": "server_error", "message": "The server restarted before this response finished."}
PURGE_EVERY_S = 600.0


def owner_of(authorization: str | None) -> str:
    """Whose responses a request may read: a digest of its bearer key ("" on a server without keys).

    Keys are kept apart: a response stored under one key is not found under another.
    """
    if not authorization:
        return ""
    return hashlib.sha256(authorization.encode()).hexdigest()[:32]


def as_items(response: Response) -> list[dict[str, Any]]:
    """A response's output as input items, the form a follow-up's history takes them in."""
    return [item.model_dump(mode="json", exclude_none=True) for item in response.output]


class ResponsesService:
    """The response store, the background runs, and the store's periodic clean-up."""

    def __init__(self, store: ResponseStore) -> None:
        self._store = store
        self._running: dict[str, asyncio.Task[None]] = {}
        self._writes: set[asyncio.Future[None]] = set()
        self._closing = False
        self._purger = asyncio.get_running_loop().create_task(self._purge_periodically())

    @classmethod
    async def open(cls, store: ResponseStore) -> ResponsesService:
        """Start serving from `store`, failing what a previous process left unfinished."""
        failed = await store.fail_unfinished(RESTARTED)
        if failed:
            logger.warning(
                "%d stored responses were unfinished when the server last stopped: marked failed", failed
            )
        return cls(store)

    def save(self, owner: str, response: Response, history: list[dict[str, Any]]) -> None:
        """Queue `response`'s write (with the conversation up to it); later reads find it."""
        record = StoredResponse(
            response_id=response.id,
            owner=owner,
            created_at=float(response.created_at),
            status=response.status,
            body=response.model_dump(mode="json"),
            history=history,
        )
        try:
            write = self._store.submit_put(record)
        except ResponseStoreError:
            logger.warning("response %s not stored: the store is closed", response.id)
            return
        self._writes.add(write)
        write.add_done_callback(self._written)

    def _written(self, write: asyncio.Future[None]) -> None:
        self._writes.discard(write)
        if not write.cancelled() and write.exception() is not None:
            logger.error("a response could not be stored: %s", write.exception())

    async def stored(self, owner: str, response_id: str, param: str = "response_id") -> StoredResponse:
        """The stored response, or 404 (absent, expired and another key's alike)."""
        record = await self._store.get(response_id, owner)
        if record is None:
            raise ResponseNotFoundError(f"No response with id '{response_id}' was found.", param=param)
        return record

    async def delete(self, owner: str, response_id: str) -> None:
        """Delete a stored response, stopping it first if it runs in the background (404 if there is none)."""
        record = await self.stored(owner, response_id)
        task = self._running.get(record.response_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._store.delete(response_id, owner)

    def run_in_background(self, response_id: str, run: Coroutine[Any, Any, None]) -> None:
        """Run a background response's generation as a task of its own, cancellable by id."""
        task = asyncio.get_running_loop().create_task(run, name=f"response {response_id}")
        self._running[response_id] = task
        task.add_done_callback(lambda _: self._running.pop(response_id, None))

    async def cancel(self, owner: str, response_id: str) -> dict[str, Any]:
        """Stop a background response; answers it as stored once stopped (a finished one is unchanged)."""
        await self.stored(owner, response_id)
        task = self._running.get(response_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return (await self.stored(owner, response_id)).body

    def ended(
        self, owner: str, response: Response, history: list[dict[str, Any]], error: BaseException | None
    ) -> None:
        """Store how a background response ended without an answer: cancelled, or failed with `error`."""
        if self._closing:  # stopped by shutdown, not by its owner
            error = ServerError("The server shut down before this response finished.")
        if error is None or isinstance(error, asyncio.CancelledError):
            update: dict[str, Any] = {"status": "cancelled"}
        else:
            message = (
                error.message
                if isinstance(error, ServerError)
                else "The server failed to generate the response."
            )
            code = "rate_limit_exceeded" if getattr(error, "status", None) == 429 else "server_error"
            update = {"status": "failed", "error": ResponseError(code=code, message=message)}
        update["completed_at"] = None
        self.save(owner, response.model_copy(update=update), history)

    async def _purge_periodically(self) -> None:
        while True:
            await asyncio.sleep(PURGE_EVERY_S)
            try:
                purged = await self._store.purge_expired()
            except ResponseStoreError:
                return
            if purged:
                logger.info("purged %d expired stored responses", purged)

    async def close(self, grace_s: float = 5.0) -> None:
        """Stop background runs (stored as cancelled), finish queued writes, close the store."""
        self._closing = True
        self._purger.cancel()
        for task in list(self._running.values()):
            task.cancel()
        deadline = time.monotonic() + grace_s
        pending = [*self._running.values()]
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=max(0.1, deadline - time.monotonic()))
        await self._store.close()
