"""The PostgreSQL batch store's connections, schema, and the schema's versions in `wattserve_schema`.

`_MIGRATIONS[n]` takes a database from version n to n + 1; a later change appends one. Every replica
migrates on open, under a transaction-scoped advisory lock, so replicas starting together migrate once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from server.storage.batches.rows import BATCH_COLUMNS, OPEN_LINE
from server.storage.batches.types import BatchSchemaTooNewError, BatchStoreError

Connection = psycopg.AsyncConnection[Any]

# The row of `wattserve_schema` this store's version lives in; other stores may keep theirs beside it.
COMPONENT = "batches"
# pg_advisory_xact_lock keys: any fixed 64-bit numbers no other lock of this database uses.
MIGRATION_LOCK = 0x77617474_00000001
QUOTA_LOCK = 0x77617474_00000002

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE batch_files (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            owner TEXT NOT NULL,
            purpose TEXT NOT NULL,
            filename TEXT NOT NULL,
            bytes BIGINT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION,
            content BYTEA NOT NULL  -- in the database, so replicas need no shared volume
        )""",
        "CREATE INDEX batch_files_by_owner ON batch_files (owner, created_at, seq)",
        "CREATE INDEX batch_files_by_expiry ON batch_files (expires_at) WHERE expires_at IS NOT NULL",
        f"""CREATE TABLE batches (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            owner TEXT NOT NULL, endpoint TEXT NOT NULL, input_file_id TEXT NOT NULL,
            completion_window TEXT NOT NULL, status TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
            {", ".join(f"{name} DOUBLE PRECISION" for name in BATCH_COLUMNS[8:15])},
            total BIGINT NOT NULL, completed BIGINT NOT NULL, failed BIGINT NOT NULL,
            output_file_id TEXT, error_file_id TEXT, metadata TEXT, errors TEXT,
            joules DOUBLE PRECISION NOT NULL, output_tokens BIGINT NOT NULL,
            co2e_grams DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX batches_by_owner ON batches (owner, created_at, seq)",
        "CREATE INDEX batches_by_status ON batches (status, created_at, seq)",
        """CREATE TABLE batch_lines (
            batch_id TEXT NOT NULL,
            line_no INTEGER NOT NULL,
            custom_id TEXT NOT NULL,
            url TEXT NOT NULL,
            body TEXT NOT NULL,  -- JSON as text: jsonb would reorder keys and refuse some escapes
            state TEXT NOT NULL,  -- pending, claimed, done, cancelled
            worker_id TEXT,
            claimed_at DOUBLE PRECISION,
            record TEXT,
            failed BOOLEAN,
            PRIMARY KEY (batch_id, line_no)
        )""",
        f"CREATE INDEX batch_lines_open ON batch_lines (batch_id, line_no) WHERE {OPEN_LINE}",
        "CREATE INDEX batch_lines_by_worker ON batch_lines (worker_id) WHERE state = 'claimed'",
    ),
    # A batch reports the emissions its flex scheduling avoided; batches stored before count none.
    ("ALTER TABLE batches ADD COLUMN co2e_avoided_grams DOUBLE PRECISION NOT NULL DEFAULT 0",),
)
SCHEMA_VERSION = len(_MIGRATIONS)


async def _migrate(connection: Connection, where: str) -> None:
    """Bring the database to `SCHEMA_VERSION` in one transaction; `where` names it in errors.

    Raises:
        BatchSchemaTooNewError: A newer wattserve wrote it.
    """
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS wattserve_schema"
            " (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        cursor = await connection.execute(
            "SELECT version FROM wattserve_schema WHERE component = %s", (COMPONENT,)
        )
        row = await cursor.fetchone()
        version = 0 if row is None else row[0]
        if version > SCHEMA_VERSION:
            raise BatchSchemaTooNewError(
                f"{where} holds batch store schema {version}; this wattserve knows up to "
                f"{SCHEMA_VERSION}: run a newer wattserve or point the store at another database"
            )
        for migration in _MIGRATIONS[version:]:
            for statement in migration:
                await connection.execute(statement)
        await connection.execute(
            "INSERT INTO wattserve_schema (component, version) VALUES (%s, %s)"
            " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
            (COMPONENT, SCHEMA_VERSION),
        )


class Database:
    """A pool of async connections to the store's database, each in autocommit outside `connect()`."""

    def __init__(self, pool: AsyncConnectionPool[Connection]) -> None:
        self._pool = pool
        self._closed = False

    @classmethod
    async def open(cls, url: str, max_connections: int) -> Database:
        """Connect to the database at `url` and bring its schema up to date.

        Raises:
            BatchSchemaTooNewError: A newer wattserve wrote the database.
            BatchStoreError: The database cannot be reached or used.
        """
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            open=False,
            kwargs={"autocommit": True},
            check=AsyncConnectionPool.check_connection,  # a connection the server dropped is replaced
            name="wattserve-batch-store",
        )
        try:
            # One plain connection first: a wrong URL or an unreachable server fails now, with libpq's
            # reason, rather than after the pool's retries.
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
                await _migrate(connection, "the database")
            await pool.open(wait=True, timeout=30.0)
        except psycopg.Error as err:
            await pool.close()
            raise BatchStoreError(f"cannot open the PostgreSQL batch store: {err}") from err
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    @asynccontextmanager
    async def connect(self, *, transaction: bool = True) -> AsyncIterator[Connection]:
        """A connection, in one transaction unless told otherwise; psycopg's errors as BatchStoreError."""
        if self._closed:
            raise BatchStoreError("the batch store is closed")
        try:
            async with self._pool.connection() as connection:
                if not transaction:
                    yield connection
                    return
                async with connection.transaction():
                    yield connection
        except psycopg.errors.UniqueViolation as err:
            raise BatchStoreError(f"an id is taken: {err.diag.message_detail}") from err
        except psycopg.Error as err:
            raise BatchStoreError(f"the PostgreSQL batch store failed: {err}") from err

    async def rows(self, query: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows of one query, outside any transaction."""
        async with self.connect(transaction=False) as db:
            return await (await db.execute(query, args)).fetchall()

    async def close(self) -> None:
        """Close the pool once calls in flight have returned their connections; later calls raise."""
        if not self._closed:
            self._closed = True
            await self._pool.close()
