"""Every engine step handed to the server, through vLLM's stat-logger hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vllm.config import VllmConfig
from vllm.v1.metrics.loggers import StatLoggerBase
from vllm.v1.metrics.stats import IterationStats, SchedulerStats


class StepRelay:
    """Hands every engine step to one callback, through vLLM's stat-logger hook.

    vLLM calls its stat loggers from the output handler on the event loop, once per batch of engine-core
    outputs, and sends scheduler stats even for steps that produced no output (prefill-only steps), so
    this is the engine-side activity signal the energy ledger needs.
    """

    def __init__(self) -> None:
        self.on_step: Callable[[bool, int, int], None] | None = None

    def for_engine(self, vllm_config: VllmConfig, engine_index: int = 0) -> StatLoggerBase:
        """The stat-logger factory vLLM calls once per engine."""
        return _StepLogger(self)


class _StepLogger(StatLoggerBase):
    def __init__(self, relay: StepRelay) -> None:  # vLLM's factory signature is served by the relay
        self._relay = relay

    def record(
        self,
        scheduler_stats: SchedulerStats | None,
        iteration_stats: IterationStats | None,
        mm_cache_stats: Any = None,
        engine_idx: int = 0,
    ) -> None:
        on_step = self._relay.on_step
        if scheduler_stats is not None and on_step is not None:
            # vLLM builds IterationStats only for batches with outputs: None means a prefill-only step.
            on_step(
                iteration_stats is not None,
                scheduler_stats.num_running_reqs,
                scheduler_stats.num_waiting_reqs,
            )

    def log_engine_initialized(self) -> None:
        """Nothing to log."""
