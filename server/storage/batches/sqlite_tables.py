"""The SQLite batch store's tables: every method runs on the store's worker thread, one transaction each.

`BEGIN IMMEDIATE` takes the file's write lock up front, so each write is atomic and serialised against
every other process that opened the same file, not only this one's thread: that is what makes a claim
safe between replicas sharing the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from server.storage.batches.rows import (
    BATCH_COLUMNS,
    FILE_COLUMNS,
    FINALIZE_FROM,
    FINISHED_AT,
    OPEN_LINE,
    READY,
    batch_from_row,
    batch_values,
    file_from_row,
    file_values,
    finalize_timestamps,
    json_text,
    json_value,
    line_from_row,
    line_values,
    outcome_totals,
    quota_error,
)
from server.storage.batches.sqlite_schema import open_connection, transaction
from server.storage.batches.types import (
    CANCELLING,
    EXPIRED,
    FAILED,
    FINISHED,
    IN_PROGRESS,
    VALIDATING,
    BatchLimits,
    BatchLine,
    BatchRecord,
    BatchStoreError,
    FileRecord,
    LineKey,
    LineOutcome,
)

_STATUS_LOCKED = (CANCELLING, *FINISHED)
_FILES = ", ".join(FILE_COLUMNS)
_BATCHES = ", ".join(BATCH_COLUMNS)
_VISIBLE = "(expires_at IS NULL OR expires_at >= ?)"
_CANCELLING_IDS = f"SELECT id FROM batches WHERE status = '{CANCELLING}'"


class Tables:
    """The SQL side of the SQLite store; only the store's worker thread calls it."""

    def __init__(self, connection: sqlite3.Connection, limits: BatchLimits, clock: Callable[[], float]):
        self._db = connection
        self._limits = limits
        self._clock = clock

    @classmethod
    def open(cls, path: Path, limits: BatchLimits, clock: Callable[[], float]) -> Tables:
        """Open the file, creating it and its schema as needed (see `open_connection`)."""
        return cls(open_connection(path), limits, clock)

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    # Files

    def file_bytes(self) -> int:
        """The bytes of every stored file."""
        return self._db.execute("SELECT COALESCE(SUM(bytes), 0) FROM batch_files").fetchone()[0]

    def insert_file(self, record: FileRecord) -> None:
        """Insert an upload's row, within the quota."""
        with transaction(self._db):
            if error := quota_error(record, self.file_bytes(), self._limits):
                raise error
            self._insert_files([record])

    def _insert_files(self, records: list[FileRecord]) -> None:
        try:
            self._db.executemany(
                f"INSERT INTO batch_files ({_FILES}) VALUES ({', '.join('?' * len(FILE_COLUMNS))})",
                [file_values(record) for record in records],
            )
        except sqlite3.IntegrityError as err:
            raise BatchStoreError(f"a file id is taken: {[r.id for r in records]}") from err

    def get_file(self, owner: str, file_id: str) -> FileRecord | None:
        """The owner's file, or None."""
        row = self._db.execute(
            f"SELECT {_FILES} FROM batch_files WHERE id = ? AND owner = ? AND {_VISIBLE}",
            (file_id, owner, self._clock()),
        ).fetchone()
        return None if row is None else file_from_row(row)

    def list_files(self, owner: str, purpose: str | None, after: str | None, limit: int) -> list[FileRecord]:
        """A page of the owner's files, newest first."""
        where = ["owner = ?", _VISIBLE]
        args: list[Any] = [owner, self._clock()]
        if purpose is not None:
            where.append("purpose = ?")
            args.append(purpose)
        if after is not None:
            # An `after` that is not the owner's file gives no row to compare with, so no page.
            where.append(
                "(created_at, seq) < (SELECT created_at, seq FROM batch_files WHERE id = ? AND owner = ?)"
            )
            args += [after, owner]
        rows = self._db.execute(
            f"SELECT {_FILES} FROM batch_files WHERE {' AND '.join(where)}"
            " ORDER BY created_at DESC, seq DESC LIMIT ?",
            (*args, max(limit, 0)),
        ).fetchall()
        return [file_from_row(row) for row in rows]

    def delete_file(self, owner: str, file_id: str) -> bool:
        """Delete the owner's file's row; whether there was one."""
        with transaction(self._db):
            query = f"DELETE FROM batch_files WHERE id = ? AND owner = ? AND {_VISIBLE}"
            return self._db.execute(query, (file_id, owner, self._clock())).rowcount > 0

    def file_ids(self) -> set[str]:
        """The ids of every stored file."""
        return {file_id for (file_id,) in self._db.execute("SELECT id FROM batch_files")}

    # Batches

    def create_batch(self, batch: BatchRecord, lines: list[BatchLine]) -> None:
        """Insert the batch and its lines, pending."""
        with transaction(self._db):
            try:
                self._db.execute(
                    f"INSERT INTO batches ({_BATCHES}) VALUES ({', '.join('?' * len(BATCH_COLUMNS))})",
                    batch_values(batch),
                )
            except sqlite3.IntegrityError as err:
                raise BatchStoreError(f"batch id {batch.id} is taken") from err
            self._db.executemany(
                "INSERT INTO batch_lines (batch_id, line_no, custom_id, url, body, state)"
                " VALUES (?, ?, ?, ?, ?, 'pending')",
                map(line_values, lines),
            )

    def get_batch(self, owner: str | None, batch_id: str) -> BatchRecord | None:
        """The batch, if `owner`'s (or whoever's, for None)."""
        query = f"SELECT {_BATCHES} FROM batches WHERE id = ?"
        row = (
            self._db.execute(query, (batch_id,))
            if owner is None
            else self._db.execute(query + " AND owner = ?", (batch_id, owner))
        ).fetchone()
        return None if row is None else batch_from_row(row)

    def list_batches(self, owner: str, after: str | None, limit: int) -> list[BatchRecord]:
        """A page of the owner's batches, newest first."""
        where, args = "owner = ?", [owner]
        if after is not None:
            where += (
                " AND (created_at, seq) < (SELECT created_at, seq FROM batches WHERE id = ? AND owner = ?)"
            )
            args += [after, owner]
        rows = self._db.execute(
            f"SELECT {_BATCHES} FROM batches WHERE {where} ORDER BY created_at DESC, seq DESC LIMIT ?",
            (*args, max(limit, 0)),
        ).fetchall()
        return [batch_from_row(row) for row in rows]

    def set_status(self, batch_id: str, status: str, timestamps: dict[str, float]) -> bool:
        """Set the status and timestamps unless the batch is cancelling or finished; whether it was."""
        assignments = "".join(f", {name} = ?" for name in timestamps)  # names checked by the caller
        with transaction(self._db):
            changed = self._db.execute(
                f"UPDATE batches SET status = ?{assignments} WHERE id = ?"
                f" AND status NOT IN ({', '.join('?' * len(_STATUS_LOCKED))})",
                (status, *timestamps.values(), batch_id, *_STATUS_LOCKED),
            ).rowcount
            if changed and status == FAILED:
                self._cancel_lines(batch_id, claimed_too=True)
        return changed > 0

    def _cancel_lines(self, batch_id: str, *, claimed_too: bool) -> None:
        states = OPEN_LINE if claimed_too else "state = 'pending'"
        self._db.execute(
            f"UPDATE batch_lines SET state = 'cancelled' WHERE batch_id = ? AND {states}", (batch_id,)
        )

    def cancel_batch(self, owner: str, batch_id: str) -> BatchRecord | None:
        """Start cancelling the owner's batch if it is validating or in progress; the batch, or None."""
        with transaction(self._db):
            batch = self.get_batch(owner, batch_id)
            if batch is None or batch.status not in (VALIDATING, IN_PROGRESS):
                return batch
            self._db.execute(
                "UPDATE batches SET status = ?, cancelling_at = ? WHERE id = ?",
                (CANCELLING, self._clock(), batch_id),
            )
            self._cancel_lines(batch_id, claimed_too=False)
            return self.get_batch(owner, batch_id)

    # Running lines

    def claim_lines(self, worker_id: str, limit: int) -> list[BatchLine]:
        """Take up to `limit` runnable lines for the worker, oldest batch first, then by line."""
        now = self._clock()
        lapsed = now - self._limits.lease_s
        claimed: list[BatchLine] = []
        with transaction(self._db):
            running = self._db.execute(
                "SELECT id FROM batches WHERE status = ? ORDER BY created_at, seq", (IN_PROGRESS,)
            ).fetchall()
            for (batch_id,) in running:
                if len(claimed) >= limit:
                    break
                rows = self._db.execute(
                    "SELECT batch_id, line_no, custom_id, url, body FROM batch_lines"
                    f" WHERE batch_id = ? AND {OPEN_LINE} AND (state = 'pending' OR claimed_at < ?)"
                    " ORDER BY line_no LIMIT ?",
                    (batch_id, lapsed, limit - len(claimed)),
                ).fetchall()
                claimed += map(line_from_row, rows)
            self._db.executemany(
                "UPDATE batch_lines SET state = 'claimed', worker_id = ?, claimed_at = ?"
                " WHERE batch_id = ? AND line_no = ?",
                [(worker_id, now, line.batch_id, line.line_no) for line in claimed],
            )
        return claimed

    def renew_claims(self, worker_id: str, keys: Sequence[LineKey]) -> None:
        """Restart the lease of those lines the worker still holds."""
        now = self._clock()
        with transaction(self._db):
            self._db.executemany(
                "UPDATE batch_lines SET claimed_at = ?"
                " WHERE batch_id = ? AND line_no = ? AND state = 'claimed' AND worker_id = ?",
                [(now, batch_id, line_no, worker_id) for batch_id, line_no in keys],
            )

    def finish_line(self, worker_id: str, batch_id: str, outcome: LineOutcome) -> bool:
        """Write the outcome and count it in, if the worker still holds the line; whether it did."""
        with transaction(self._db):
            answered = self._db.execute(
                "UPDATE batch_lines SET state = 'done', record = ?, failed = ?"
                " WHERE batch_id = ? AND line_no = ? AND state = 'claimed' AND worker_id = ?",
                (json_text(outcome.record), outcome.failed, batch_id, outcome.line_no, worker_id),
            ).rowcount
            if answered:
                self._count_finished(batch_id, outcome)
        return answered > 0

    def _count_finished(self, batch_id: str, outcome: LineOutcome) -> None:
        self._db.execute(
            "UPDATE batches SET completed = completed + ?, failed = failed + ?, joules = joules + ?,"
            " output_tokens = output_tokens + ?, co2e_grams = co2e_grams + ?,"
            " co2e_avoided_grams = co2e_avoided_grams + ? WHERE id = ?",
            (*outcome_totals(outcome), batch_id),
        )

    def release_claims(self, worker_id: str) -> None:
        """Put the worker's claimed lines back to pending."""
        with transaction(self._db):
            self._db.execute(
                "UPDATE batch_lines SET state = 'pending', worker_id = NULL, claimed_at = NULL"
                " WHERE state = 'claimed' AND worker_id = ?",
                (worker_id,),
            )

    # Finishing batches

    def _ready(self, where: str, args: Sequence[Any]) -> list[str]:
        rows = self._db.execute(
            f"SELECT id FROM batches AS b WHERE ({where}) AND {READY} ORDER BY created_at, seq", args
        ).fetchall()
        return [batch_id for (batch_id,) in rows]

    def batches_ready_to_finalize(self) -> list[str]:
        """The batches with nothing left to run that no one has finalized, oldest first."""
        lapsed = f"state = 'claimed' AND claimed_at < ? AND batch_id IN ({_CANCELLING_IDS})"
        cutoff = (self._clock() - self._limits.lease_s,)
        # Looked for first, so a poll finding none takes no write lock.
        if self._db.execute(f"SELECT 1 FROM batch_lines WHERE {lapsed} LIMIT 1", cutoff).fetchone():
            with transaction(self._db):
                self._db.execute(f"UPDATE batch_lines SET state = 'cancelled' WHERE {lapsed}", cutoff)
        return self._ready(f"status IN ('{IN_PROGRESS}', '{CANCELLING}', '{EXPIRED}')", ())

    def finalize(
        self, batch_id: str, status: str, output: FileRecord | None, error_file: FileRecord | None
    ) -> bool:
        """Insert the files' rows and finish the batch, if it is ready as `status` needs; whether it did."""
        with transaction(self._db):
            batch = self.get_batch(None, batch_id)
            if (
                batch is None
                or batch.status != FINALIZE_FROM[status]
                or not self._ready("id = ?", (batch_id,))
            ):
                return False
            self._cancel_lines(batch_id, claimed_too=True)  # what was never run, never will be
            self._insert_files([record for record in (output, error_file) if record is not None])
            changes = {
                "status": status,
                **finalize_timestamps(status, self._clock()),
                "output_file_id": output and output.id,
                "error_file_id": error_file and error_file.id,
            }
            self._db.execute(
                f"UPDATE batches SET {', '.join(f'{name} = ?' for name in changes)} WHERE id = ?",
                (*changes.values(), batch_id),
            )
        return True

    def line_outcomes(self, batch_id: str) -> list[tuple[int, dict[str, Any], bool]]:
        """(line_no, record, failed) of the done lines, in line order."""
        rows = self._db.execute(
            "SELECT line_no, record, failed FROM batch_lines WHERE batch_id = ? AND state = 'done'"
            " ORDER BY line_no",
            (batch_id,),
        ).fetchall()
        return [(line_no, json_value(record), bool(failed)) for line_no, record, failed in rows]

    def expire_due(self, now: float) -> list[str]:
        """Expire the validating and in-progress batches past their expires_at; their ids."""
        with transaction(self._db):
            due = [
                batch_id
                for (batch_id,) in self._db.execute(
                    "SELECT id FROM batches WHERE status IN (?, ?) AND expires_at < ?"
                    " ORDER BY created_at, seq",
                    (VALIDATING, IN_PROGRESS, now),
                )
            ]
            for batch_id in due:
                self._db.execute(
                    "UPDATE batches SET status = ?, expired_at = ? WHERE id = ?", (EXPIRED, now, batch_id)
                )
                # Claimed lines too: an answer arriving after the deadline is not the batch's.
                self._cancel_lines(batch_id, claimed_too=True)
        return due

    def purge_expired(self, now: float) -> tuple[int, list[str]]:
        """Delete what is past its time; how many files and batches went, and the files' ids."""
        finished_before = now - self._limits.file_ttl_s
        with transaction(self._db):
            files = [
                file_id
                for (file_id,) in self._db.execute("SELECT id FROM batch_files WHERE expires_at < ?", (now,))
            ]
            self._db.execute("DELETE FROM batch_files WHERE expires_at < ?", (now,))
            batches = [
                (batch_id,)
                for (batch_id,) in self._db.execute(
                    f"SELECT id FROM batches WHERE status IN ({', '.join('?' * len(FINISHED))})"
                    f" AND {FINISHED_AT} < ?",
                    (*FINISHED, finished_before),
                )
            ]
            self._db.executemany("DELETE FROM batch_lines WHERE batch_id = ?", batches)
            self._db.executemany("DELETE FROM batches WHERE id = ?", batches)
        return len(files) + len(batches), files
