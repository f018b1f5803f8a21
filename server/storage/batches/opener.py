"""Open the batch store a URL names: SQLite, embedded (the default), or PostgreSQL for several replicas."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from server.storage.batches.types import BatchLimits, BatchStore, BatchStoreError

SQLITE_PREFIX = "sqlite://"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def sqlite_path(url: str) -> Path:
    """The file a `sqlite://` URL names: what follows `sqlite://`.

    `sqlite:///var/b.sqlite3` is `/var/b.sqlite3`; so is SQLAlchemy's absolute form, `sqlite:////var/b.sqlite3`,
    and `sqlite://state/b.sqlite3` is relative to the working folder.
    """
    path = url.removeprefix(SQLITE_PREFIX)
    if not path.strip("/"):
        raise BatchStoreError(f"{url!r} names no file: write sqlite:///path/to/batches.sqlite3")
    return Path("/" + path.lstrip("/")) if path.startswith("/") else Path(path)


async def open_batch_store(
    url: str, files_dir: Path, limits: BatchLimits, *, clock: Callable[[], float] = time.time
) -> BatchStore:
    """Open the store `url` names, creating its schema (and for SQLite its file and folders) as needed.

    Args:
        url: `sqlite:///path/to/file.sqlite3`, or a libpq URL, `postgresql://user@host/database`.
        files_dir: Where SQLite keeps file contents; PostgreSQL keeps them in the database.
        limits: What bounds the store.
        clock: Unix seconds now, for leases and expiry; a test's to move.

    Raises:
        BatchSchemaTooNewError: A newer wattserve wrote the store.
        BatchStoreError: The URL is of neither kind, the store cannot be opened, or PostgreSQL's driver
            is not installed.
    """
    if url.startswith(SQLITE_PREFIX):
        from server.storage.batches.sqlite import SqliteBatchStore  # noqa: PLC0415

        return await SqliteBatchStore.open(sqlite_path(url), files_dir, limits, clock)
    if url.startswith(POSTGRES_PREFIXES):
        try:
            # Imported here: psycopg is an optional extra, needed only by a PostgreSQL store.
            from server.storage.batches.postgres import PostgresBatchStore  # noqa: PLC0415
        except ImportError as err:
            raise BatchStoreError(
                "a PostgreSQL batch store needs psycopg and psycopg-pool: "
                f"pip install 'wattserve[postgres]' ({err})"
            ) from err
        return await PostgresBatchStore.open(url, limits, clock)
    scheme = url.split("://", 1)[0] if "://" in url else url
    raise BatchStoreError(
        f"batch store URL {scheme!r}...: expected sqlite:///path/to/file.sqlite3 or postgresql://..."
    )
