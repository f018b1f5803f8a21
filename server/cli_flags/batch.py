"""Flags for OpenAI's Files and Batch APIs: where their state lives, and how much of it."""

from __future__ import annotations

from server.cli_flags.flag import Flag
from server.settings import BATCH_LIVE_HOLD_S

BATCH_FLAGS: list[Flag] = [
    Flag(
        "--batch-store",
        "batch_store",
        "Where files and batches live: sqlite:///PATH (default: batches.sqlite3 under --cache-dir, file "
        "bytes beside it) or a postgresql:// URL, which several replicas share (file bytes in the database).",
    ),
    Flag("--max-batch-file-bytes", "max_batch_file_bytes", "A larger upload gets 413.", {"type": int}),
    Flag(
        "--max-batch-lines", "max_batch_lines", "A batch input file with more lines gets 400.", {"type": int}
    ),
    Flag(
        "--max-batch-storage-bytes",
        "max_batch_storage_bytes",
        "Bytes of uploaded files kept at most; an upload past it gets 413.",
        {"type": int},
    ),
    Flag(
        "--batch-file-ttl",
        "batch_file_ttl_seconds",
        "Seconds uploaded files and finished batches are kept before they are purged.",
        {"type": float},
    ),
    Flag(
        "--batch-max-in-flight",
        "batch_max_in_flight",
        "Batch requests one replica runs at once, all in the flex tier (default: half of --max-num-seqs).",
        {"type": int},
    ),
    Flag(
        "--batch-max-in-flight-beside-live",
        "batch_max_in_flight_beside_live",
        "Batch requests one replica starts at most while live requests run or arrived in the last "
        f"{BATCH_LIVE_HOLD_S:g} s: each batch request in an engine step slows live requests' tokens too. "
        "0: batch requests start only while no live traffic.",
        {"type": int},
    ),
    Flag(
        "--batch-lease-seconds",
        "batch_lease_seconds",
        "A batch line a replica claimed and stopped renewing (it died) is taken over after this long.",
        {"type": float},
    ),
]
