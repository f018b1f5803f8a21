"""The typed `AppState` and the `Depends` getters: the only module that touches `request.app.state`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from adapters.loader import AdapterManager
from server.api.scrape import ScrapeSnapshots
from server.engine.protocol import EngineClient
from server.errors import EngineUnavailableError
from server.serving.intake import RequestIntake

NOT_RUNNING = "The engine is not running."


@dataclass(frozen=True)
class Serving:
    """What exists while the engine runs, built at once by the composition root once the engine is up."""

    engine: EngineClient
    adapters: AdapterManager | None
    intake: RequestIntake
    # Built on this module, so typed loosely here: `server.api.responses_service.ResponsesService` and
    # `server.api.batch_service.BatchApi`, each None until the engine is up.
    responses: Any = None  # the Responses API's store and background runs
    batches: Any = None  # the Files and Batch APIs' store and this replica's runner


@dataclass(frozen=True)
class AnswerOptions:
    """How answers are worded, server-wide, as `vllm serve`'s flags set it."""

    response_role: str = "assistant"  # --response-role: the role chat answers carry
    force_include_usage: bool = False  # --enable-force-include-usage: usage in every stream, every chunk


@dataclass
class AppState:
    """What request handlers share.

    Everything but `serving` is built with the app; `serving` is the engine's life: None before the
    engine is up and from the start of shutdown on, when generation routes answer 503.
    """

    scrapes: ScrapeSnapshots  # what /metrics and /v1/energy answer
    answers: AnswerOptions = field(default_factory=AnswerOptions)
    serving: Serving | None = None
    started_at: float = field(default_factory=time.time)

    @property
    def engine_healthy(self) -> bool:
        """Whether an engine is up and has not died."""
        return self.serving is not None and not self.serving.engine.is_dead


# The getters are coroutines: FastAPI runs a plain `def` dependency in its thread pool, a thread hop
# per request for a dictionary lookup.
async def get_state(request: Request) -> AppState:
    """The application's state."""
    return request.app.state.wattserve


async def get_serving(request: Request) -> Serving:
    """What serves while the engine runs, or a 503 while it does not."""
    serving = request.app.state.wattserve.serving
    if serving is None:
        raise EngineUnavailableError(NOT_RUNNING)
    return serving
