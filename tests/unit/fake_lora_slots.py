"""vLLM 0.32's LoRA slot caches reduced to adapter ids, as an `AdapterEngine` for the pin-rule tests.

It mirrors, line for line, what kills vLLM's engine core: the GPU slots are an LRU of `max_loras` that
evicts the oldest unpinned adapter and raises "All items are pinned" when none is left
(vllm/lora/model_manager.py:1393-1404, vllm/utils/cache.py:200-210); the CPU cache does the same with
`max_cpu_loras` (vllm/lora/worker_manager.py:311-314); `add_lora` activates the adapter it adds
(worker_manager.py:324); a step activates the batch's adapters one by one and fails with a KeyError if
one of them lost its slot to a later one (worker_manager.py:286-287, punica_wrapper/utils.py:101-106).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

from adapters.types import AdapterRef


class VllmSlotModel:
    """The adapter caches of one vLLM worker; any exception here would kill the real engine core."""

    def __init__(self, max_loras: int, max_cpu_loras: int | None = None) -> None:
        self.max_loras = max_loras
        self.max_cpu_loras = max_cpu_loras or max_loras
        self.cpu: OrderedDict[int, None] = OrderedDict()
        self.gpu: OrderedDict[int, None] = OrderedDict()
        self.pinned: set[int] = set()
        self.events: list[str] = []

    def _oldest_unpinned(self, cache: OrderedDict[int, None]) -> int:
        victim = next((key for key in cache if key not in self.pinned), None)
        if victim is None:
            raise RuntimeError("All items are pinned, cannot remove oldest from the cache.")
        return victim

    def _register(self, adapter_id: int) -> None:
        if adapter_id in self.cpu:
            self.cpu.move_to_end(adapter_id)
            return
        if len(self.cpu) + 1 > self.max_cpu_loras:
            victim = self._oldest_unpinned(self.cpu)
            del self.cpu[victim]
            self.gpu.pop(victim, None)
        self.cpu[adapter_id] = None

    def _activate(self, adapter_id: int) -> None:
        if adapter_id not in self.gpu and len(self.gpu) >= self.max_loras:
            del self.gpu[self._oldest_unpinned(self.gpu)]
        self.gpu[adapter_id] = None
        self.gpu.move_to_end(adapter_id)

    async def add_lora(self, ref: AdapterRef) -> None:
        self._register(ref.adapter_id)
        self._activate(ref.adapter_id)
        self.events.append(f"add {ref.adapter_id}")

    async def pin_lora(self, adapter_id: int) -> None:
        self.pinned.add(adapter_id)
        self._activate(adapter_id)
        self.events.append(f"pin {adapter_id}")

    async def remove_lora(self, adapter_id: int) -> None:
        self.cpu.pop(adapter_id, None)
        self.gpu.pop(adapter_id, None)
        self.pinned.discard(adapter_id)
        self.events.append(f"remove {adapter_id}")

    def step(self, batch: list[int]) -> None:
        """One engine step over requests for `batch` (distinct ids, at most `max_loras`, as scheduled)."""
        assert len(set(batch)) == len(batch) <= self.max_loras
        for adapter_id in batch:
            self._register(adapter_id)
            self._activate(adapter_id)
        lost = [adapter_id for adapter_id in batch if adapter_id not in self.gpu]
        if lost:
            raise KeyError(lost[0])

    def step_every_batch(self, adapter_ids: list[int]) -> None:
        """Run, each on a copy of the caches, every batch the scheduler could form from `adapter_ids`."""
        for size in range(1, self.max_loras + 1):
            for batch in itertools.permutations(adapter_ids, size):
                copy = VllmSlotModel(self.max_loras, self.max_cpu_loras)
                copy.cpu, copy.gpu, copy.pinned = (
                    OrderedDict(self.cpu),
                    OrderedDict(self.gpu),
                    set(self.pinned),
                )
                copy.step(list(batch))
