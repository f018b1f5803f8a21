"""What routers read off a replica: requests waiting anywhere, adapter residency, served adapter names.

Routers (the Gateway API Inference Extension's endpoint picker, llm-d) score replicas by vLLM's
`vllm:num_requests_waiting`, `vllm:num_requests_running`, `vllm:kv_cache_usage_perc`,
`vllm:lora_requests_info` and `vllm:cache_config_info`. Two of those do not tell the truth about a
wattserve replica as vLLM exports them:

- vLLM's waiting count sees only its own scheduler's queue, not requests held in wattserve's admission
  queue or flex lane, so an overloaded replica looks idle: `wattserve_num_requests_waiting` counts all
  three (the endpoint picker's queue metric is mapped to it: docs/deploy.md);
- `vllm:lora_requests_info` names adapters by their engine-side keys (`demo-alpha@v1#1`), which no
  client sends, so LoRA affinity never matched: the page is rewritten as it is rendered
  (`ServedLoraNames`) to carry the names clients put in `model`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Gauge, Metric
from prometheus_client.registry import Collector

from adapters.loader import AdapterManager
from adapters.types import served_name

LORA_INFO = "vllm:lora_requests_info"
RUNNING_LABEL, WAITING_LABEL = "running_lora_adapters", "waiting_lora_adapters"

# (adapter, slot, pinned): the label values of one adapter's residency series.
Residency = tuple[str, str, str]


class RouterMetrics:
    """The router-facing gauges, on wattserve's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.waiting = Gauge(
            "wattserve_num_requests_waiting",
            "Requests waiting anywhere in this replica: in wattserve's admission queue, in its flex lane "
            "and in vLLM's scheduler queue (vllm:num_requests_waiting counts only the last). A request is "
            "in one of them at a time. The queue depth to give routers and autoscalers.",
            registry=registry,
        )
        self.resident = Gauge(
            "wattserve_adapter_resident",
            "1 for each adapter the engine holds, by the name clients use; no series once it is unloaded. "
            'slot="gpu": known to hold one of the engine\'s --max-loras adapter slots, because it is '
            "pinned or because every adapter version the engine holds fits in those slots at once. "
            'slot="cpu": held by the engine but not known to hold a slot: vLLM\'s LRU moves unpinned '
            "adapters between the slots and its host cache (--max-cpu-loras) as batches need them, "
            "which this process does not see. pinned: pinned in the engine (vLLM has no unpin: an "
            "adapter unpinned through the API stays pinned there until it is replaced or unloaded).",
            ["adapter", "slot", "pinned"],
            registry=registry,
        )
        self._shown: set[Residency] = set()

    def count_waiting(self, waiting: Callable[[], int]) -> None:
        """Read the replica's waiting requests from `waiting` at each scrape."""
        self.waiting.set_function(waiting)

    def adapters_changed(self, manager: AdapterManager) -> None:
        """Show the adapters `manager` holds now (after any load, pin, unload or failure)."""
        self.show_residency(residency(manager))

    def show_residency(self, wanted: Iterable[Residency]) -> None:
        """Make the residency series exactly `wanted`: set each one, remove the rest.

        Each series changes on its own (never a clear-and-refill), so a scrape rendered meanwhile in its
        thread never misses an adapter that stays loaded.
        """
        shown = set(wanted)
        for labels in shown:
            self.resident.labels(*labels).set(1)
        for labels in self._shown - shown:
            self.resident.remove(*labels)
        self._shown = shown


def residency(manager: AdapterManager) -> list[Residency]:
    """Each name served now, with where its current version is known to sit."""
    slots = manager.slots
    everything_fits = slots.held <= slots.max_loras
    shown = []
    for name in manager.registry.names():
        entry = manager.registry.current(name)
        if entry is None:
            continue
        pinned = slots.is_pinned(entry.ref.adapter_id)
        slot = "gpu" if pinned or everything_fits else "cpu"
        shown.append((name, slot, "true" if pinned else "false"))
    return shown


class ServedLoraNames:
    """A view of a registry whose `vllm:lora_requests_info` names adapters as clients do.

    vLLM's gauge is one series per (max_lora, waiting, running) label set it has seen, valued with the
    time it was last set; routers read the newest. Engine keys become served names (deduplicated: two
    versions of one adapter during a swap are one name), and label sets that then coincide merge into
    one series holding the newest time, so the family never repeats a label set. Runs in the scrape's
    thread, off the event loop; it reads only the registry.
    """

    def __init__(self, registry: Collector) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        """The registry's families, `vllm:lora_requests_info` rewritten."""
        for family in self._registry.collect():
            yield served_lora_info(family) if family.name == LORA_INFO else family


def served_lora_info(family: Metric) -> Metric:
    """`family` (vLLM's `vllm:lora_requests_info`) with served adapter names in its adapter labels."""
    newest: dict[tuple[tuple[str, str], ...], float] = {}
    for sample in family.samples:
        labels = dict(sample.labels)
        for label in (RUNNING_LABEL, WAITING_LABEL):
            if label in labels:
                labels[label] = served_names(labels[label])
        key = tuple(labels.items())
        newest[key] = max(newest.get(key, sample.value), sample.value)
    rewritten = Metric(family.name, family.documentation, family.type, family.unit)
    for key, value in newest.items():
        rewritten.add_sample(family.name, dict(key), value)
    return rewritten


def served_names(engine_names: str) -> str:
    """A comma-separated list of engine keys as the served names, each once, in first-seen order."""
    names = (served_name(name) for name in engine_names.split(",") if name)
    return ",".join(dict.fromkeys(names))
