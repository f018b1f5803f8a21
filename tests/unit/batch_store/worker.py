"""Another process on a batch store, as a replica would be.

Run as `python -m tests.unit.batch_store.worker MODE URL FILES_DIR [WORKER]`. Modes:
    claim WORKER   says `ready`, waits for a line on stdin, claims three lines at a time until none are
                   left, and prints the (batch_id, line_no) pairs it took as one JSON list.
    finish WORKER  claims and answers lines one by one, printing `finished N` after each; on the second,
                   the transaction stops after the line is written and before the batch's counts are, says
                   `inside`, and waits there to be killed.
    upload         stores a file whose content is written but whose row never goes in: says `inside` there.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path
from typing import Any

from server.storage.batches import BatchLimits, open_batch_store
from server.storage.batches.sqlite_tables import Tables
from tests.unit.batch_store.records import file_record, outcome

# Long leases: this process's claims must not lapse while the test runs.
LIMITS = BatchLimits(
    max_file_bytes=1_000_000, max_total_bytes=10_000_000, file_ttl_s=86_400.0, lease_s=3600.0
)


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def stop_here_sync(*_: Any) -> None:
    say("inside")
    threading.Event().wait()  # until killed, holding the open transaction


async def stop_here(*_: Any) -> None:
    say("inside")
    await asyncio.Event().wait()


def stop_before_counting(url: str) -> None:
    """Make the next finish_line stop inside its transaction, the line written, the counts not."""
    if url.startswith("sqlite"):
        Tables._count_finished = stop_here_sync  # type: ignore[method-assign]
    else:
        from server.storage.batches.postgres import PostgresBatchStore  # noqa: PLC0415

        PostgresBatchStore._count_finished = stop_here  # type: ignore[method-assign]


async def main(mode: str, url: str, files_dir: Path, worker: str) -> None:
    store = await open_batch_store(url, files_dir, LIMITS)
    if mode == "claim":
        say("ready")
        await asyncio.to_thread(sys.stdin.readline)
        taken: list[tuple[str, int]] = []
        while lines := await store.claim_lines(worker, 3):
            taken += [(one.batch_id, one.line_no) for one in lines]
        say(json.dumps(taken))
    elif mode == "finish":
        for n in range(2):
            if n == 1:
                stop_before_counting(url)
            (line,) = await store.claim_lines(worker, 1)
            assert await store.finish_line(worker, line.batch_id, outcome(line.line_no))
            say(f"finished {line.line_no}")
    elif mode == "upload":
        Tables.insert_file = stop_here_sync  # type: ignore[method-assign]
        await store.put_file(file_record(1, b"never stored"), b"never stored")
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else ""))
