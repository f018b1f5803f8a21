"""Stored Responses API responses in one SQLite file, bounded by count, bytes and age, kept across restarts.

Why it is built this way:

- Durable against a process crash: the file is in WAL mode with `synchronous=NORMAL`. A committed
  transaction is in the WAL, in the OS page cache, once `COMMIT` returns, so a SIGKILL at any moment loses
  nothing committed; only a power loss or OS crash can lose the last commits (FULL would fsync each one,
  a cost this cache of answers does not need).
- Atomic: each write (a put with the evictions it causes, a delete, a purge) is one transaction, so a
  process killed mid-write leaves the state before it.
- Bounded: a put evicts the oldest responses (by `created_at`, then insertion order) until the store is
  within its count and bytes, in the same transaction, never the response just written; a response older
  than the TTL is never returned and is deleted when read or purged. Each row keeps its JSON byte size
  in a column, so totals are a SUM over an index rather than a read of every body.
- Off the event loop: one worker thread owns the only connection and runs every call in turn.

Invariants: after every put, count <= `max_responses` and bytes <= `max_bytes`; a response is returned
only to its owner and only within the TTL.

Errors::

    ResponseStoreError               the file cannot be used as a response store
    ├── StoredResponseTooLargeError  one response alone is over `max_bytes`
    └── StoreSchemaTooNewError       the file was written by a newer wattserve
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Written out, not bound as parameters: SQLite uses a partial index only for a query whose WHERE it can
# match to the index's when the statement is prepared.
_UNFINISHED = "status IN ('queued', 'in_progress')"

# The schema, one migration per version: `_MIGRATIONS[n]` takes a file from `user_version` n to n + 1, so a
# later change appends one and every older file is brought up to date on open, in one transaction.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE responses (
            seq INTEGER PRIMARY KEY,  -- the rowid: a new row gets the largest yet, so it is insertion order
            response_id TEXT NOT NULL UNIQUE,
            owner TEXT NOT NULL,
            created_at REAL NOT NULL,
            status TEXT NOT NULL,
            body TEXT NOT NULL,
            history TEXT NOT NULL,
            size_bytes INTEGER NOT NULL
        )""",
        # Eviction order and TTL purges search this index, and it covers COUNT and SUM(size_bytes).
        "CREATE INDEX responses_by_age ON responses (created_at, size_bytes)",
        # Only the few unfinished rows, so a startup finds them without reading every row.
        f"CREATE INDEX responses_unfinished ON responses (status) WHERE {_UNFINISHED}",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


class ResponseStoreError(Exception):
    """The response store cannot do what was asked of it."""


class StoredResponseTooLargeError(ResponseStoreError):
    """One response alone is over the store's `max_bytes`: evicting every other would not make room."""


class StoreSchemaTooNewError(ResponseStoreError):
    """The store's file was written by a newer wattserve, whose schema this one does not know."""


@dataclass(frozen=True)
class StoreLimits:
    """What bounds the store.

    Attributes:
        max_responses: The most responses kept; the oldest are evicted first beyond this.
        max_bytes: The most bytes of stored JSON (bodies and histories) kept; the oldest are evicted first.
        ttl_s: Seconds after its `created_at` that a response is gone: never returned, then purged.
    """

    max_responses: int
    max_bytes: int
    ttl_s: float

    def __post_init__(self) -> None:
        if self.max_responses < 1 or self.max_bytes < 1 or not self.ttl_s > 0:
            raise ValueError(f"store limits must be positive: {self}")


@dataclass(frozen=True)
class StoredResponse:
    """One stored response.

    Attributes:
        response_id: The Response object's id.
        owner: Who may read it: a hash of the API key where keys are kept apart, "" otherwise.
        created_at: When it was created, unix seconds; its age (for the TTL and eviction) counts from here.
        status: The Response object's status: queued, in_progress, completed, incomplete, failed, cancelled.
        body: The Response object as JSON, what GET returns.
        history: The conversation items (input, then output) a follow-up with `previous_response_id`
            continues from.
    """

    response_id: str
    owner: str
    created_at: float
    status: str
    body: dict[str, Any]
    history: list[dict[str, Any]]


def _json_text(value: object) -> tuple[str, int]:
    """`value` as compact JSON text and the size of its UTF-8 encoding, in bytes."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        return text, len(text.encode())
    except UnicodeEncodeError:
        # Lone surrogates (from a client's escaped JSON) have no UTF-8 form, and SQLite's text is UTF-8;
        # escaped as JSON \u sequences they store and load back as they were.
        text = json.dumps(value, separators=(",", ":"))
        return text, len(text)


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so a write never fails halfway on a lock it could not upgrade.
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        # SQLite has already rolled back after some errors (a full disk, an I/O error); another ROLLBACK
        # would then fail and hide the error that matters.
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


class _Tables:
    """The SQLite side: every method runs on the store's worker thread, the only one to use `connection`."""

    def __init__(self, connection: sqlite3.Connection, limits: StoreLimits, clock: Callable[[], float]):
        self._connection = connection
        self._limits = limits
        self._clock = clock

    @classmethod
    def open(cls, path: Path, limits: StoreLimits, clock: Callable[[], float]) -> _Tables:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode (isolation_level=None): transactions are only the explicit ones below.
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("PRAGMA busy_timeout = 5000")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            with _transaction(connection):
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreSchemaTooNewError(
                        f"{path} holds response store schema {version}; this wattserve knows up to "
                        f"{SCHEMA_VERSION}: run a newer wattserve or point the store at another file"
                    )
                for migration in _MIGRATIONS[version:]:
                    for statement in migration:
                        connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as err:
            connection.close()
            raise ResponseStoreError(f"cannot open {path} as a response store: {err}") from err
        except BaseException:
            connection.close()
            raise
        return cls(connection, limits, clock)

    def _expired_before(self) -> float:
        return self._clock() - self._limits.ttl_s

    def put(self, record: StoredResponse) -> None:
        body, body_bytes = _json_text(record.body)
        history, history_bytes = _json_text(record.history)
        size_bytes = body_bytes + history_bytes
        if size_bytes > self._limits.max_bytes:
            raise StoredResponseTooLargeError(
                f"response {record.response_id} is {size_bytes} bytes of JSON; "
                f"the store holds at most {self._limits.max_bytes}"
            )
        key = (record.response_id, record.owner, record.created_at, record.status)
        with _transaction(self._connection):
            # An upsert, not INSERT OR REPLACE: a rewritten response keeps its row, so its place in the
            # insertion order is where it was first stored.
            self._connection.execute(
                "INSERT INTO responses (response_id, owner, created_at, status, body, history, size_bytes)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (response_id) DO UPDATE SET"
                " owner = excluded.owner, created_at = excluded.created_at, status = excluded.status,"
                " body = excluded.body, history = excluded.history, size_bytes = excluded.size_bytes",
                (*key, body, history, size_bytes),
            )
            (seq,) = self._connection.execute(
                "SELECT seq FROM responses WHERE response_id = ?", (record.response_id,)
            ).fetchone()
            self.evict(keep_seq=seq)

    def evict(self, keep_seq: int | None) -> int:
        """Delete the oldest rows but `keep_seq` until within the limits; the caller holds a transaction."""
        count, size_bytes = self.stats()
        victims: list[tuple[int]] = []
        query = "SELECT seq, size_bytes FROM responses ORDER BY created_at, seq"
        with closing(self._connection.execute(query)) as oldest_first:
            for seq, row_bytes in oldest_first:
                if count <= self._limits.max_responses and size_bytes <= self._limits.max_bytes:
                    break
                if seq != keep_seq:
                    victims.append((seq,))
                    count -= 1
                    size_bytes -= row_bytes
        self._connection.executemany("DELETE FROM responses WHERE seq = ?", victims)
        return len(victims)

    def get(self, response_id: str, owner: str) -> StoredResponse | None:
        row = self._connection.execute(
            "SELECT owner, created_at, status, body, history FROM responses WHERE response_id = ?",
            (response_id,),
        ).fetchone()
        if row is None:
            return None
        stored_owner, created_at, status, body, history = row
        if created_at < self._expired_before():
            with _transaction(self._connection):
                self._connection.execute("DELETE FROM responses WHERE response_id = ?", (response_id,))
            return None
        if stored_owner != owner:
            return None
        return StoredResponse(response_id, owner, created_at, status, json.loads(body), json.loads(history))

    def delete(self, response_id: str, owner: str) -> bool:
        expired_before = self._expired_before()
        with _transaction(self._connection):
            row = self._connection.execute(
                "SELECT created_at FROM responses WHERE response_id = ? AND owner = ?", (response_id, owner)
            ).fetchone()
            if row is None:
                return False
            self._connection.execute("DELETE FROM responses WHERE response_id = ?", (response_id,))
        # An expired response was already gone to its owner: deleting it now is a purge, not a delete.
        return row[0] >= expired_before

    def purge_expired(self) -> int:
        with _transaction(self._connection):
            return self._connection.execute(
                "DELETE FROM responses WHERE created_at < ?", (self._expired_before(),)
            ).rowcount

    def fail_unfinished(self, error: dict[str, Any]) -> int:
        with _transaction(self._connection):
            rows = self._connection.execute(
                f"SELECT seq, body, history FROM responses WHERE {_UNFINISHED}"
            ).fetchall()
            for seq, stored_body, history in rows:
                body = json.loads(stored_body)
                body["status"] = "failed"
                body["error"] = error
                body_text, body_bytes = _json_text(body)
                self._connection.execute(
                    "UPDATE responses SET status = 'failed', body = ?, size_bytes = ? WHERE seq = ?",
                    (body_text, body_bytes + len(history.encode()), seq),
                )
            # The error objects made the rows larger; the limits hold after this as after every put.
            self.evict(keep_seq=None)
        return len(rows)

    def stats(self) -> tuple[int, int]:
        query = "SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM responses"
        count, size_bytes = self._connection.execute(query).fetchone()
        return count, size_bytes

    def close(self) -> None:
        self._connection.close()


class ResponseStore:
    """Stored responses, durable and bounded, with every SQLite call on one worker thread.

    The thread is hand-rolled (one `ThreadPoolExecutor` worker) rather than an async SQLite library: one
    connection on one thread is all the store needs, and it adds no dependency. The single worker also
    serialises every call, so no two transactions ever contend. A caller cancelled while its call runs
    stops waiting; the call itself completes (or rolls back) on the worker, never half done.
    """

    def __init__(self, tables: _Tables, executor: ThreadPoolExecutor) -> None:
        self._tables = tables
        self._executor = executor
        self._closed = False

    @classmethod
    async def open(
        cls, path: Path, limits: StoreLimits, clock: Callable[[], float] = time.time
    ) -> ResponseStore:
        """Open the store at `path`, creating its folder, the file and its schema as needed.

        Args:
            path: The SQLite file.
            limits: What bounds the store.
            clock: Unix seconds now, for the TTL.

        Returns:
            The open store.

        Raises:
            StoreSchemaTooNewError: The file was written by a newer wattserve.
            ResponseStoreError: The file is not a SQLite database.
            OSError: The folder cannot be created.
        """
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wattserve-response-store")
        try:
            tables = await asyncio.get_running_loop().run_in_executor(
                executor, _Tables.open, path, limits, clock
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(tables, executor)

    async def _call(self, method: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise ResponseStoreError("the response store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, method, *args)

    async def put(self, record: StoredResponse) -> None:
        """Store `record`, or replace the one of its id, then evict the oldest others beyond the limits.

        Raises:
            StoredResponseTooLargeError: `record`'s JSON alone is over `max_bytes`; the store is unchanged.
            TypeError: `record`'s body or history holds a value JSON cannot write (dump models in JSON mode).
        """
        await self._call(self._tables.put, record)

    def submit_put(self, record: StoredResponse) -> asyncio.Future[None]:
        """Queue `record`'s write now; any call made later runs after it (one worker), so finds it."""
        if self._closed:
            raise ResponseStoreError("the response store is closed")
        return asyncio.get_running_loop().run_in_executor(self._executor, self._tables.put, record)

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        """The response stored as `response_id` by `owner`.

        Returns:
            The response, or None when there is none, it has expired, or another owner stored it: the
            caller answers all three alike, so an id tells nothing about another owner's responses.
        """
        return await self._call(self._tables.get, response_id, owner)

    async def delete(self, response_id: str, owner: str) -> bool:
        """Delete the response stored as `response_id` by `owner`.

        Returns:
            Whether there was one to delete (absent, expired and another owner's all give False).
        """
        return await self._call(self._tables.delete, response_id, owner)

    async def purge_expired(self) -> int:
        """Delete every response older than the TTL; returns how many."""
        return await self._call(self._tables.purge_expired)

    async def fail_unfinished(self, error: dict[str, Any]) -> int:
        """Mark every queued or in-progress response failed, with `error` as its body's `error` object.

        Called at startup: those responses were left by a process that died, and nothing will finish
        them, so a client polling one sees it fail rather than waiting forever.

        Returns:
            How many responses were marked failed.
        """
        return await self._call(self._tables.fail_unfinished, error)

    async def stats(self) -> tuple[int, int]:
        """The responses stored and their JSON bytes, as (count, bytes)."""
        return await self._call(self._tables.stats)

    async def close(self) -> None:
        """Close the file once every call already made has run; later calls raise ResponseStoreError."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._tables.close)
        finally:
            self._executor.shutdown(wait=False)
