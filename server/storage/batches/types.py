"""The Batch API's stored records, the `BatchStore` contract both backends keep, and its errors.

A batch's lines are in one of four states::

    pending ──claim──> claimed ──finish (by the claim's holder)──> done
       ^                  │  └──claim again (its lease lapsed: its worker is presumed dead)
       └────release───────┘
    pending ──cancel──> cancelled <──expire, fail, or a cancel once the lease lapsed── claimed

A line's outcome is written once, by the worker holding its claim, in the transaction that adds it to the
batch's counts; a done line is never claimed again. That is what answers every custom_id exactly once,
however many replicas share the store and whichever of them dies.

Errors::

    BatchStoreError            the store cannot do what was asked
    ├── StorageQuotaError      a file over max_file_bytes, or the store's files over max_total_bytes
    └── BatchSchemaTooNewError the store was written by a newer wattserve
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# File ids name files on disk: one is trusted as a path only once it matches this, whoever made it.
FILE_ID = re.compile(r"file-[0-9a-f]{32}")

# A batch's statuses, as OpenAI spells them.
VALIDATING = "validating"
FAILED = "failed"
IN_PROGRESS = "in_progress"
FINALIZING = "finalizing"
COMPLETED = "completed"
EXPIRED = "expired"
CANCELLING = "cancelling"
CANCELLED = "cancelled"
FINISHED = (COMPLETED, FAILED, EXPIRED, CANCELLED)

# The timestamps `set_status` may set, each a BatchRecord field and a column of the same name.
STATUS_TIMESTAMPS = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)

LineKey = tuple[str, int]
"""A line's key: (batch_id, line_no)."""


class BatchStoreError(Exception):
    """The batch store cannot do what was asked of it."""


class StorageQuotaError(BatchStoreError):
    """A file is over `max_file_bytes`, or storing it would take the store's files over `max_total_bytes`."""


class BatchSchemaTooNewError(BatchStoreError):
    """The store was written by a newer wattserve, whose schema this one does not know."""


def is_file_id(file_id: str) -> bool:
    """Whether `file_id` has the one shape a file id may have (and so is safe as a file name)."""
    return FILE_ID.fullmatch(file_id) is not None


def check_file_id(file_id: str) -> None:
    """Raise ValueError unless `file_id` is `file-` and 32 lowercase hex digits."""
    if not is_file_id(file_id):
        raise ValueError(f"not a file id: {file_id!r} (file- and 32 lowercase hex digits)")


@dataclass(frozen=True)
class BatchLimits:
    """What bounds the store.

    Attributes:
        max_file_bytes: The largest file `put_file` takes.
        max_total_bytes: The most bytes of files the whole store holds through `put_file` (a batch's
            output and error files are stored regardless: its input already counted).
        file_ttl_s: Seconds a finished batch is kept, from when it finished, before `purge_expired`
            deletes it and its lines.
        lease_s: Seconds a claim lasts unless renewed; a line claimed longer ago is another worker's to take.
    """

    max_file_bytes: int
    max_total_bytes: int
    file_ttl_s: float
    lease_s: float

    def __post_init__(self) -> None:
        if self.max_file_bytes < 1 or self.max_total_bytes < 1 or not self.file_ttl_s > 0:
            raise ValueError(f"batch store limits must be positive: {self}")
        if not (self.lease_s > 0 and math.isfinite(self.lease_s)):
            raise ValueError(f"batch store limits must be positive: {self}")


@dataclass(frozen=True)
class FileRecord:
    """An uploaded file (or a batch's output or error file), without its bytes.

    Attributes:
        id: `file-` and 32 lowercase hex digits.
        owner: Who may read it: a hash of the API key where keys are kept apart, "" otherwise.
        purpose: OpenAI's purpose: `batch` for inputs, `batch_output` for a batch's output and error files.
        filename: The name it was uploaded as.
        bytes: Its size.
        created_at: Unix seconds.
        expires_at: Unix seconds after which it is gone (never returned, then purged); None: never.
    """

    id: str
    owner: str
    purpose: str
    filename: str
    bytes: int
    created_at: float
    expires_at: float | None


@dataclass(frozen=True)
class BatchLine:
    """One request of a batch's input file.

    Attributes:
        batch_id: The batch it belongs to.
        line_no: Its line in the input file, from 1.
        custom_id: The caller's id for it, answered once in the output or error file.
        url: The endpoint it goes to, e.g. `/v1/chat/completions`.
        body: The request body.
    """

    batch_id: str
    line_no: int
    custom_id: str
    url: str
    body: dict[str, Any]


@dataclass(frozen=True)
class LineOutcome:
    """How one line ended.

    Attributes:
        line_no: The line, from 1.
        custom_id: Its custom_id.
        record: The whole JSON object OpenAI writes for it in the output file (the error file if failed).
        failed: Whether it goes to the error file and counts as failed.
        joules: The energy its request used, if metered.
        output_tokens: The tokens it generated.
        co2e_grams: Its emissions, if known.
        co2e_avoided_grams: The emissions carbon-aware scheduling avoided by running it when it ran
            rather than when it arrived, if known.
    """

    line_no: int
    custom_id: str
    record: dict[str, Any]
    failed: bool
    joules: float | None
    output_tokens: int
    co2e_grams: float | None
    co2e_avoided_grams: float | None = None


@dataclass(frozen=True)
class BatchRecord:
    """A batch as stored: OpenAI's Batch object's fields, plus its owner and energy totals.

    `total` is the number of its lines; `completed` and `failed` count its done lines, and `joules`,
    `output_tokens`, `co2e_grams` and `co2e_avoided_grams` are their totals (a line without a metered
    value adds nothing): what the batch used, and what its flex scheduling saved.
    `errors` are the input file's validation errors, each {code, message, param, line}.
    """

    id: str
    owner: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    created_at: float
    expires_at: float
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    expired_at: float | None = None
    cancelling_at: float | None = None
    cancelled_at: float | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    metadata: dict[str, str] | None = None
    errors: list[dict[str, Any]] | None = None
    joules: float = 0.0
    output_tokens: int = 0
    co2e_grams: float = 0.0
    co2e_avoided_grams: float = 0.0


class BatchStore(Protocol):
    """Files and batches, durable and shared safely by every process (replica) that opens the same store.

    Every method is a coroutine that never blocks the event loop, and every write is one transaction: a
    process killed mid-write leaves the state before it. A read for an owner answers another owner's
    files and batches as absent. Times are the store's clock (unix seconds) unless passed in.
    """

    async def put_file(self, record: FileRecord, content: bytes) -> None:
        """Store `content` as the file `record` describes: the content, then the row.

        Raises:
            StorageQuotaError: It is over max_file_bytes, or the store's files would pass max_total_bytes.
            ValueError: `record.id` is not a file id, or `record.bytes` is not `len(content)`.
            BatchStoreError: A file of that id is stored already.
        """
        ...

    async def get_file(self, owner: str, file_id: str) -> FileRecord | None:
        """The owner's file; None if absent, past its expires_at, another owner's, or not a file id."""
        ...

    async def file_content(self, owner: str, file_id: str) -> bytes | None:
        """The owner's file's bytes; None as for `get_file`."""
        ...

    async def list_files(
        self, owner: str, *, purpose: str | None, after: str | None, limit: int
    ) -> list[FileRecord]:
        """Up to `limit` of the owner's files (of `purpose` if given), newest first.

        `after` is the id of a file of the previous page: the page holds the files after it. An `after`
        that is not one of the owner's files gives an empty page.
        """
        ...

    async def delete_file(self, owner: str, file_id: str) -> bool:
        """Delete the owner's file; whether there was one (False as `get_file` gives None)."""
        ...

    async def create_batch(self, batch: BatchRecord, lines: list[BatchLine]) -> None:
        """Store the batch and every line, pending, in one transaction.

        Raises:
            ValueError: `batch.total` is not `len(lines)`, or a line is another batch's.
            BatchStoreError: A batch of that id is stored already.
        """
        ...

    async def get_batch(self, owner: str, batch_id: str) -> BatchRecord | None:
        """The owner's batch, or None."""
        ...

    async def get_batch_any_owner(self, batch_id: str) -> BatchRecord | None:
        """The batch whoever owns it: for the runner, which learns ids, not owners; never for a route."""
        ...

    async def list_batches(self, owner: str, *, after: str | None, limit: int) -> list[BatchRecord]:
        """Up to `limit` of the owner's batches, newest first, after the batch `after` as `list_files`."""
        ...

    async def set_status(self, batch_id: str, status: str, **timestamps: float) -> bool:
        """Set the batch's status and the `*_at` timestamps named, unless it is cancelling or finished.

        Only validating, in_progress, finalizing and failed are set here (the others have their own
        method); a failed batch's unanswered lines are cancelled. Returns whether the batch changed.

        Raises:
            ValueError: Another status, or a name that is not in STATUS_TIMESTAMPS.
        """
        ...

    async def claim_lines(self, worker_id: str, limit: int) -> list[BatchLine]:
        """Atomically take up to `limit` lines of in-progress batches for the worker, claimed from now.

        A line is taken if pending, or claimed by any worker longer than lease_s ago (a replica that
        died); oldest batch first, then by line_no. Two workers, in any processes, never take one line
        while its claim is live, and a done or cancelled line is never taken.
        """
        ...

    async def renew_claims(self, worker_id: str, keys: Sequence[LineKey]) -> None:
        """Restart the lease of those of `keys` (batch_id, line_no) the worker still holds; others stay."""
        ...

    async def finish_line(self, worker_id: str, batch_id: str, outcome: LineOutcome) -> bool:
        """Answer a line, if the worker still holds its claim; whether it did.

        In one transaction the line becomes done with `outcome.record`, and the batch's completed or
        failed count and its energy totals grow by the outcome's. False, and nothing changes, when the
        claim was lost: taken over after its lease lapsed, released, or ended by a cancel or expiry; the
        line is answered by whoever holds it, once.
        """
        ...

    async def release_claims(self, worker_id: str) -> None:
        """Put every line the worker holds back to pending, for any worker (it is shutting down)."""
        ...

    async def cancel_batch(self, owner: str, batch_id: str) -> BatchRecord | None:
        """Cancel the owner's batch: the batch after it, or None if it is not the owner's or absent.

        A validating or in-progress batch becomes cancelling (cancelling_at now): its pending lines are
        cancelled, never run; claimed ones may still finish. Any other batch is returned unchanged.
        """
        ...

    async def batches_ready_to_finalize(self) -> list[str]:
        """Ids of the batches with nothing left to run that no one has finalized, oldest first.

        In progress with no pending or claimed line (finalize as completed); cancelling with no claimed
        line (as cancelled), lapsed claims of cancelling batches being cancelled first, so a worker that
        lost one cannot answer after the caller has read the outcomes; expired and not yet finalized
        (as expired).
        """
        ...

    async def finalize(
        self,
        batch_id: str,
        *,
        status: str,
        output: FileRecord | None,
        output_content: bytes | None,
        error_file: FileRecord | None,
        error_content: bytes | None,
    ) -> bool:
        """Finish a ready batch as `status`, with its output and error files, once; whether it did.

        `status` is completed (the batch in progress), cancelled (cancelling) or expired (expired). In
        one transaction: the files are stored (outside the quota: the batch's input counted), the batch
        gets their ids, the status, finalizing_at and completed_at or cancelled_at, and its lines never
        run are cancelled. False, with no file left behind, when the batch is not ready in that state:
        another replica finalized it first, or it changed since.

        Raises:
            ValueError: Another status, a file without its content or the other way round, a bad file id.
        """
        ...

    async def line_outcomes(self, batch_id: str) -> list[tuple[int, dict[str, Any], bool]]:
        """(line_no, record, failed) of every done line of the batch, in line order: each custom_id once."""
        ...

    async def expire_due(self, now: float) -> list[str]:
        """Expire the validating and in-progress batches whose expires_at is before `now`; their ids.

        Each becomes expired (expired_at `now`) and its lines not yet answered are cancelled, claimed ones
        too: an answer after the deadline is not the batch's. What was answered goes into the files
        `finalize(status="expired")` stores; until then `batches_ready_to_finalize` lists the batch.
        """
        ...

    async def purge_expired(self, now: float) -> int:
        """Delete what is past its time; how many files and batches went (their lines not counted).

        Files whose expires_at is before `now`, and completed, failed, expired or cancelled batches that
        finished more than file_ttl_s before `now`, with their lines.
        """
        ...

    async def close(self) -> None:
        """Release the store's connections once calls in flight are done; later calls raise."""
        ...
