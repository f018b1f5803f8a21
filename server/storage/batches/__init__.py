"""Durable storage for OpenAI's Batch API: uploaded files, batches and their lines, shared by replicas.

One interface, `BatchStore`, two implementations: SQLite, embedded (the default), and PostgreSQL for
replicas on several hosts. `open_batch_store` picks one by URL.
"""

from server.storage.batches.opener import open_batch_store
from server.storage.batches.types import (
    BatchLimits,
    BatchLine,
    BatchRecord,
    BatchSchemaTooNewError,
    BatchStore,
    BatchStoreError,
    FileRecord,
    LineKey,
    LineOutcome,
    StorageQuotaError,
    is_file_id,
)

__all__ = [
    "BatchLimits",
    "BatchLine",
    "BatchRecord",
    "BatchSchemaTooNewError",
    "BatchStore",
    "BatchStoreError",
    "FileRecord",
    "LineKey",
    "LineOutcome",
    "StorageQuotaError",
    "is_file_id",
    "open_batch_store",
]
