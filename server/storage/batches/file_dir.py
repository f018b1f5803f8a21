"""The SQLite store's file contents: one file per id in a folder, each written whole or not at all.

A content is written to a temporary file, fsynced, then linked to its id's name (a link, unlike a rename,
never replaces a file already there) and the folder fsynced: a crash leaves either no file of that id or
the whole one. Every name is built from an id checked against `file-` and 32 hex digits first, so no id,
whoever made it, reaches outside the folder.

The row goes in after the content and out before it; a crash between the two leaves a content without a
row, which no reader finds and `sweep` deletes once it is older than a write could take.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from server.storage.batches.types import check_file_id, is_file_id

_TEMPORARY = ".tmp-"


class FileDir:
    """The folder of contents. Its methods block on disk I/O: call them off the event loop."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def create(self) -> None:
        """Create the folder if it is not there."""
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, file_id: str) -> Path:
        """The content's path; ValueError unless `file_id` is a file id."""
        check_file_id(file_id)
        return self.root / file_id

    def write(self, file_id: str, content: bytes) -> None:
        """Write the content of a new file; FileExistsError if one of that id is there already."""
        final = self.path(file_id)
        temporary = self.root / f"{_TEMPORARY}{file_id}-{secrets.token_hex(4)}"
        try:
            with temporary.open("xb") as out:
                out.write(content)
                out.flush()
                os.fsync(out.fileno())
            os.link(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)
        self._sync_folder()

    def read(self, file_id: str) -> bytes | None:
        """The content, or None if it is gone."""
        try:
            return self.path(file_id).read_bytes()
        except FileNotFoundError:  # deleted since its row was read
            return None

    def remove(self, file_ids: Iterable[str]) -> None:
        """Delete the contents there are of these ids."""
        removed = False
        for file_id in file_ids:
            with contextlib.suppress(FileNotFoundError):
                self.path(file_id).unlink()
                removed = True
        if removed:
            self._sync_folder()

    def sweep(self, keep: set[str], older_than: float) -> int:
        """Delete contents not in `keep`, and temporary files, last modified before `older_than`."""
        swept = 0
        with os.scandir(self.root) as entries:
            for entry in entries:
                orphan = is_file_id(entry.name) and entry.name not in keep
                if not (orphan or entry.name.startswith(_TEMPORARY)) or not entry.is_file():
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat().st_mtime < older_than:
                        os.unlink(entry.path)
                        swept += 1
        return swept

    def _sync_folder(self) -> None:
        # The new or removed name is durable only once the folder itself is on disk.
        descriptor = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
