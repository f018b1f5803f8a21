"""What both backends share: records as rows and back, and the checks made before anything is written.

Columns are named as the records' fields and kept in their order, so a row is a record's values.
"""

from __future__ import annotations

import json
from dataclasses import astuple, fields
from typing import Any

from server.storage.batches.types import (
    CANCELLED,
    CANCELLING,
    COMPLETED,
    EXPIRED,
    FAILED,
    FINALIZING,
    IN_PROGRESS,
    STATUS_TIMESTAMPS,
    VALIDATING,
    BatchLimits,
    BatchLine,
    BatchRecord,
    FileRecord,
    LineOutcome,
    StorageQuotaError,
    check_file_id,
)

BATCH_COLUMNS = tuple(field.name for field in fields(BatchRecord))
FILE_COLUMNS = tuple(field.name for field in fields(FileRecord))
_BATCH_JSON = ("metadata", "errors")

# The status a batch must have for `finalize` to finish it as each final status, and the timestamp it sets.
FINALIZE_FROM = {COMPLETED: IN_PROGRESS, CANCELLED: CANCELLING, EXPIRED: EXPIRED}
FINALIZED_AT = {COMPLETED: "completed_at", CANCELLED: "cancelled_at", EXPIRED: None}

# What `set_status` may set; the others each have their own method, which keeps their invariants.
SETTABLE = (VALIDATING, IN_PROGRESS, FINALIZING, FAILED)

# Written out, not bound as parameters: SQLite uses a partial index only for a query whose WHERE it can
# match to the index's when the statement is prepared.
OPEN_LINE = "state IN ('pending', 'claimed')"
# A batch (`b`) with nothing left to run that no one has finalized: in progress with every line answered,
# cancelling with none claimed, or expired. A cancelling batch's lapsed claims are cancelled before this
# is judged (their workers are presumed dead), so one that was only slow cannot answer after the runner
# has read the batch's outcomes to write its files: its finish_line finds the claim gone.
READY = f"""(
    (b.status = '{IN_PROGRESS}' AND NOT EXISTS (
        SELECT 1 FROM batch_lines WHERE batch_id = b.id AND {OPEN_LINE}))
    OR (b.status = '{CANCELLING}' AND NOT EXISTS (
        SELECT 1 FROM batch_lines WHERE batch_id = b.id AND {OPEN_LINE} AND state = 'claimed'))
    OR (b.status = '{EXPIRED}' AND b.finalizing_at IS NULL))"""
# A finished batch's age, for the purge, counts from when it finished.
FINISHED_AT = "COALESCE(completed_at, cancelled_at, expired_at, failed_at, created_at)"


def json_text(value: object) -> str:
    """`value` as compact JSON text that both databases store as text, whatever strings it holds."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode()
    except UnicodeEncodeError:
        # Lone surrogates (from a client's escaped JSON) have no UTF-8 form, and both databases' text is
        # UTF-8; escaped as JSON \u sequences they store and load back as they were. (JSON escapes control
        # characters always, so PostgreSQL never sees the NUL its text cannot hold.)
        text = json.dumps(value, separators=(",", ":"))
    return text


def json_value(text: str | None) -> Any:
    """The value of stored JSON text, None for NULL."""
    return None if text is None else json.loads(text)


def batch_values(batch: BatchRecord) -> tuple[Any, ...]:
    """The batch's column values, in `BATCH_COLUMNS` order."""
    return tuple(
        json_text(value) if name in _BATCH_JSON and value is not None else value
        for name, value in zip(BATCH_COLUMNS, astuple(batch), strict=True)
    )


def batch_from_row(row: tuple[Any, ...]) -> BatchRecord:
    """The batch of a row in `BATCH_COLUMNS` order."""
    values = {
        name: json_value(value) if name in _BATCH_JSON else value
        for name, value in zip(BATCH_COLUMNS, row, strict=True)
    }
    return BatchRecord(**values)


def file_values(record: FileRecord) -> tuple[Any, ...]:
    """The file's column values, in `FILE_COLUMNS` order."""
    return astuple(record)


def file_from_row(row: tuple[Any, ...]) -> FileRecord:
    """The file of a row in `FILE_COLUMNS` order."""
    return FileRecord(*row)


def line_from_row(row: tuple[Any, ...]) -> BatchLine:
    """The line of a (batch_id, line_no, custom_id, url, body) row."""
    batch_id, line_no, custom_id, url, body = row
    return BatchLine(batch_id, line_no, custom_id, url, json.loads(body))


def line_values(line: BatchLine) -> tuple[Any, ...]:
    """The line's (batch_id, line_no, custom_id, url, body) values."""
    return (line.batch_id, line.line_no, line.custom_id, line.url, json_text(line.body))


def outcome_totals(outcome: LineOutcome) -> tuple[int, int, float, int, float, float]:
    """What one finished line adds to its batch.

    (completed, failed, joules, output_tokens, co2e_grams, co2e_avoided_grams): the order of the columns
    each backend's `finish_line` adds them to.
    """
    return (
        0 if outcome.failed else 1,
        1 if outcome.failed else 0,
        outcome.joules or 0.0,
        outcome.output_tokens,
        outcome.co2e_grams or 0.0,
        outcome.co2e_avoided_grams or 0.0,
    )


def check_file(record: FileRecord, content: bytes) -> None:
    """ValueError unless the id is a file id and the record says the content's size."""
    check_file_id(record.id)
    if record.bytes != len(content):
        raise ValueError(f"file {record.id} says {record.bytes} bytes but its content is {len(content)}")


def check_upload(record: FileRecord, content: bytes, limits: BatchLimits) -> None:
    """The checks `put_file` makes before it writes anything."""
    check_file(record, content)
    if record.bytes > limits.max_file_bytes:
        raise StorageQuotaError(
            f"file {record.id} is {record.bytes} bytes; the largest file stored is {limits.max_file_bytes}"
        )


def quota_error(record: FileRecord, stored_bytes: int, limits: BatchLimits) -> StorageQuotaError | None:
    """The error for storing `record` beside `stored_bytes` of files, or None if it fits."""
    if stored_bytes + record.bytes <= limits.max_total_bytes:
        return None
    return StorageQuotaError(
        f"storing file {record.id} ({record.bytes} bytes) beside the {stored_bytes} stored would pass "
        f"the store's {limits.max_total_bytes} bytes of files"
    )


def check_new_batch(batch: BatchRecord, lines: list[BatchLine]) -> None:
    """ValueError unless the lines are the batch's and as many as its total."""
    if batch.total != len(lines):
        raise ValueError(f"batch {batch.id} says total {batch.total} but has {len(lines)} lines")
    if strays := {line.batch_id for line in lines} - {batch.id}:
        raise ValueError(f"lines of batches {sorted(strays)} given with batch {batch.id}")


def check_status_change(status: str, timestamps: dict[str, float]) -> None:
    """ValueError unless `set_status` may set the status and the names are timestamps."""
    if status not in SETTABLE:
        raise ValueError(
            f"set_status sets {', '.join(SETTABLE)}; {status!r} is set by cancel_batch, "
            "expire_due or finalize, which keep its lines consistent"
        )
    if unknown := set(timestamps) - set(STATUS_TIMESTAMPS):
        raise ValueError(f"not batch timestamps: {sorted(unknown)}; known: {', '.join(STATUS_TIMESTAMPS)}")


def check_finalize(
    status: str,
    output: FileRecord | None,
    output_content: bytes | None,
    error_file: FileRecord | None,
    error_content: bytes | None,
) -> list[tuple[FileRecord, bytes]]:
    """The output and error files to store with their contents, after checking the arguments agree."""
    if status not in FINALIZE_FROM:
        raise ValueError(f"finalize finishes a batch as {', '.join(FINALIZE_FROM)}, not {status!r}")
    files = []
    for record, content in ((output, output_content), (error_file, error_content)):
        if (record is None) != (content is None):
            raise ValueError("an output or error file and its content come together or not at all")
        if record is not None and content is not None:
            check_file(record, content)
            files.append((record, content))
    return files


def finalize_timestamps(status: str, now: float) -> dict[str, float]:
    """The timestamps finalizing as `status` sets."""
    finished_at = FINALIZED_AT[status]
    return {"finalizing_at": now} | ({finished_at: now} if finished_at else {})
