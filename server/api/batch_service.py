"""What the Files and Batch routes share while the engine runs: the store, its limits, the runner."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends

from server.api.batch_runner import BatchRunner
from server.api.state import Serving, get_serving
from server.errors import EngineUnavailableError
from server.storage.batches import BatchLimits, BatchStore


@dataclass
class BatchApi:
    """The Batch API's store, limits and this replica's runner."""

    store: BatchStore
    limits: BatchLimits  # the store's, and the upload size the files route checks
    max_lines: int  # lines one batch's input may hold
    runner: BatchRunner
    energy_source: str | None  # the meter's name, for batch totals; None when the server does not meter


async def get_batch_api(serving: Serving = Depends(get_serving)) -> BatchApi:
    """The Batch API, or a 503 while it is not open."""
    if serving.batches is None:
        raise EngineUnavailableError("The batch store is not open.")
    return serving.batches
