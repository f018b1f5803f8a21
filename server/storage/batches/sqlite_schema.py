"""The SQLite batch store's schema, its versions (`PRAGMA user_version`), and its transactions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server.storage.batches.rows import BATCH_COLUMNS, OPEN_LINE
from server.storage.batches.types import BatchSchemaTooNewError, BatchStoreError

# `_MIGRATIONS[n]` takes a file from `user_version` n to n + 1; a later change appends one.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE batch_files (
            seq INTEGER PRIMARY KEY,  -- the rowid: insertion order, the tie-break of equal created_at
            id TEXT NOT NULL UNIQUE,
            owner TEXT NOT NULL,
            purpose TEXT NOT NULL,
            filename TEXT NOT NULL,
            bytes INTEGER NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL
        )""",
        "CREATE INDEX batch_files_by_owner ON batch_files (owner, created_at, seq)",
        "CREATE INDEX batch_files_by_expiry ON batch_files (expires_at) WHERE expires_at IS NOT NULL",
        f"""CREATE TABLE batches (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            owner TEXT NOT NULL, endpoint TEXT NOT NULL, input_file_id TEXT NOT NULL,
            completion_window TEXT NOT NULL, status TEXT NOT NULL,
            created_at REAL NOT NULL, expires_at REAL NOT NULL,
            {", ".join(f"{name} REAL" for name in BATCH_COLUMNS[8:15])},
            total INTEGER NOT NULL, completed INTEGER NOT NULL, failed INTEGER NOT NULL,
            output_file_id TEXT, error_file_id TEXT, metadata TEXT, errors TEXT,
            joules REAL NOT NULL, output_tokens INTEGER NOT NULL, co2e_grams REAL NOT NULL
        )""",
        "CREATE INDEX batches_by_owner ON batches (owner, created_at, seq)",
        "CREATE INDEX batches_by_status ON batches (status, created_at, seq)",
        """CREATE TABLE batch_lines (
            batch_id TEXT NOT NULL,
            line_no INTEGER NOT NULL,
            custom_id TEXT NOT NULL,
            url TEXT NOT NULL,
            body TEXT NOT NULL,
            state TEXT NOT NULL,  -- pending, claimed, done, cancelled
            worker_id TEXT,       -- who holds the claim, or answered
            claimed_at REAL,      -- when the claim was taken or last renewed
            record TEXT,          -- the outcome's JSON, once done
            failed INTEGER,
            PRIMARY KEY (batch_id, line_no)
        )""",
        # Only the lines left to run, so claims and readiness never read the answered ones.
        f"CREATE INDEX batch_lines_open ON batch_lines (batch_id, line_no) WHERE {OPEN_LINE}",
        "CREATE INDEX batch_lines_by_worker ON batch_lines (worker_id) WHERE state = 'claimed'",
    ),
    # A batch reports the emissions its flex scheduling avoided; batches stored before count none.
    ("ALTER TABLE batches ADD COLUMN co2e_avoided_grams REAL NOT NULL DEFAULT 0",),
)
SCHEMA_VERSION = len(_MIGRATIONS)


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """One write: `BEGIN IMMEDIATE` takes the file's write lock up front; COMMIT, or ROLLBACK on error."""
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


def open_connection(path: Path) -> sqlite3.Connection:
    """Open the file at `path`, creating it, its folder and its schema as needed.

    Raises:
        BatchSchemaTooNewError: The file was written by a newer wattserve.
        BatchStoreError: The file is not a SQLite database.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Autocommit mode (isolation_level=None): transactions are only the explicit ones.
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        # Another process holding the write lock (a replica's claim) is waited for, not failed on.
        connection.execute("PRAGMA busy_timeout = 30000")
        connection.execute("PRAGMA journal_mode = WAL")
        # NORMAL: a commit survives a process crash (it is in the WAL once COMMIT returns); only a
        # power loss can take the last ones.
        connection.execute("PRAGMA synchronous = NORMAL")
        with transaction(connection):
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise BatchSchemaTooNewError(
                    f"{path} holds batch store schema {version}; this wattserve knows up to "
                    f"{SCHEMA_VERSION}: run a newer wattserve or point the store at another file"
                )
            for migration in _MIGRATIONS[version:]:
                for statement in migration:
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.DatabaseError as err:
        connection.close()
        raise BatchStoreError(f"cannot open {path} as a batch store: {err}") from err
    except BaseException:
        connection.close()
        raise
    return connection
