"""`EngineClient`: the engine's whole contract, written once. `VllmEngine` implements it; tests fake it.

Layers that need less take the narrower view they need from here (the adapter catalogue, which knows
nothing of the server, declares its own `AdapterEngine`, which this protocol satisfies).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from adapters.types import AdapterRef
from server.engine.types import GenerationStep, PreparedPrompt, SamplingSpec

if TYPE_CHECKING:  # the parsers' module imports vLLM: only the engine builds them
    from server.engine.output_parsing import OutputParsers

# `on_step(produced_output, running, waiting)`, after every engine step, on the event loop.
StepCallback = Callable[[bool, int, int], None]


class Generator(Protocol):
    """What a request's scope needs: generate and abort."""

    def generate(
        self,
        prompt: PreparedPrompt,
        spec: SamplingSpec,
        request_id: str,
        *,
        adapter: AdapterRef | None = None,
        priority: int = 0,
    ) -> AsyncIterator[GenerationStep]:
        """Stream the steps of one generation."""
        ...

    async def abort(self, request_id: str) -> None:
        """Stop a request and free its KV blocks."""
        ...


class EngineClient(Generator, Protocol):
    """Everything the server asks of its engine."""

    served_model_name: str  # the first of served_model_names: adapters' parent
    served_model_names: Sequence[str]  # every name the base model answers to (--served-model-name a b)
    max_model_len: int
    max_num_seqs: int
    model_path: str
    supports_prompt_logprobs: bool
    vocab_size: int  # token ids run from 0 to vocab_size - 1
    accepts_images: bool  # a multimodal model: chat messages may hold image parts
    system_fingerprint: str | None  # answers' `system_fingerprint`, as vLLM's --fingerprint-mode builds it
    output_parsers: (
        OutputParsers  # reasoning and tool calls out of generated text, as vLLM's parsers read them
    )

    @property
    def is_dead(self) -> bool:
        """Whether the engine has failed for good (the process should be restarted)."""
        ...

    @property
    def lora_enabled(self) -> bool:
        """Whether the engine serves LoRA adapters."""
        ...

    @property
    def max_lora_rank(self) -> int:
        """The largest adapter rank the engine accepts; 0 without LoRA."""
        ...

    @property
    def max_loras(self) -> int:
        """How many adapters the engine's slots hold at once; 0 without LoRA."""
        ...

    async def render_completion(
        self, prompt: str | list[int], *, add_special_tokens: bool = True
    ) -> PreparedPrompt:
        """Tokenize a completion prompt (with special tokens such as BOS, by default), or take its ids."""
        ...

    async def render_chat(
        self,
        messages: Sequence[dict[str, Any]],
        template_kwargs: Mapping[str, Any] | None = None,
        *,
        add_generation_prompt: bool = True,
    ) -> PreparedPrompt:
        """Apply the chat template, with the request's extra template variables, and tokenize."""
        ...

    def decode(self, token_ids: list[int]) -> str:
        """The text of some token ids."""
        ...

    def token_strings(self, token_ids: list[int]) -> list[str]:
        """Each token id's own string in the vocabulary (byte-level forms as the tokenizer keeps them)."""
        ...

    async def check_grammar(self, schema_json: str) -> None:
        """Return once a JSON schema compiles within the deadline; raise `GrammarTooComplexError` if not."""
        ...

    def observe_steps(self, on_step: StepCallback) -> None:
        """Call `on_step` after every engine step (the energy ledger and the policy follow them)."""
        ...

    async def add_lora(self, ref: AdapterRef) -> None:
        """Load an adapter version; raise if the engine refuses it."""
        ...

    async def remove_lora(self, adapter_id: int) -> None:
        """Drop an adapter version from the engine's caches."""
        ...

    async def pin_lora(self, adapter_id: int) -> None:
        """Keep an adapter version resident."""
        ...

    async def check_health(self) -> None:
        """Raise `EngineUnavailableError` unless the engine can serve."""
        ...

    async def collective_rpc(
        self, method: str, args: tuple[Any, ...] = (), timeout_s: float | None = None
    ) -> list[Any]:
        """Call a worker-extension method in every engine worker; one answer per worker."""
        ...

    def shutdown(self) -> None:
        """Stop the engine."""
        ...
