"""A vLLM general plugin that sets how long vLLM's processes busy-wait for the next engine step.

vLLM's engine core and its workers pass each step through shared-memory queues; a reader spins on the
queue (yielding its core, never sleeping) for `busy_loop_s`, one second in vLLM 0.32, after its last
read before it sleeps on a socket. Under steady load that keeps steps tight; under load with gaps, every
gap shorter than a second burns a whole core per process for nothing: on the 2-core CPU machine, at half
load, the worker spent 0.93 of a core, most of it waiting. With `WATTSERVE_ENGINE_SPIN_SECONDS` set
(`--engine-spin-seconds`), a reader spins that long instead; a step that comes after a longer gap waits
for one socket wake-up first. Unset, vLLM's default stands.

vLLM loads this in every one of its processes through the `vllm.general_plugins` entry point; the
environment variable reaches them from the server process. It acts only in wattserve's own engine
(`plugin_gate`), never in another vLLM of the same environment, and leaves a vLLM without the queue's
spin setting alone.
"""

from __future__ import annotations

import logging
import os

from server.engine.plugin_gate import in_wattserve_engine

logger = logging.getLogger(__name__)

ENV = "WATTSERVE_ENGINE_SPIN_SECONDS"
APPLIED = "engine busy-wait after a step set to %s s (%s)"


def register() -> None:
    """Entry point: give vLLM's shared-memory queue readers the configured spin time."""
    value = os.environ.get(ENV)
    if value is None or not in_wattserve_engine():
        return
    try:
        from vllm.distributed.device_communicators.shm_broadcast import SpinCondition  # noqa: PLC0415
    except ImportError:
        return
    init = SpinCondition.__init__
    defaults = init.__defaults__ or ()
    positional = init.__code__.co_varnames[: init.__code__.co_argcount]
    with_defaults = positional[len(positional) - len(defaults) :]  # the last ones carry the defaults
    if "busy_loop_s" not in with_defaults:
        logger.warning("this vLLM has no busy_loop_s to set; %s is ignored", ENV)
        return
    index = with_defaults.index("busy_loop_s")
    init.__defaults__ = (*defaults[:index], float(value), *defaults[index + 1 :])
    # vLLM's logger: its handlers are set up in each of vLLM's processes, where this runs, so the line
    # reaches the server's log with the process named, and says in which processes the setting acted.
    from vllm.logger import init_logger  # noqa: PLC0415

    init_logger(f"vllm.{__name__}").info(APPLIED, float(value), ENV)
