"""Plain records that cross the engine boundary, so nothing outside `server/engine` touches vLLM types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SamplingSpec:
    """What the caller wants sampled; the engine turns it into its own sampling parameters."""

    max_tokens: int | None = None
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int = 0
    ignore_eos: bool = False
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    json_schema: dict[str, Any] | None = None
    json_object: bool = False
    # vLLM's other structured-output constraints (at most one constraint in all) and its options for them.
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    # A model's tool-call format as an xgrammar structural tag (JSON), as vLLM's tool parsers set it.
    structural_tag: str | None = None
    structured_options: dict[str, Any] = field(default_factory=dict)
    structured_param: str = "response_format"  # the request field the constraint came from, for errors
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False

    @property
    def constrained(self) -> bool:
        """Whether a structured-output constraint applies."""
        kinds = (self.json_schema, self.regex, self.choice, self.grammar, self.structural_tag)
        return self.json_object or any(kind is not None for kind in kinds)


@dataclass(frozen=True)
class PreparedPrompt:
    """A prompt after templating and tokenization, ready to hand to `generate`."""

    token_ids: list[int]
    engine_input: Any  # the engine's own rendered form; opaque outside the engine
    text: str | None = None  # the prompt as text, when it came as text


@dataclass(frozen=True)
class TokenLogprob:
    """One token's log probability and its most likely alternatives (best first)."""

    token: str
    logprob: float | None  # None for the first prompt token, which nothing predicts
    top: list[tuple[str, float]]


# Per-step records are plain slotted classes, not frozen ones: one is built for every token streamed, and a
# frozen dataclass costs twice as much to build.
@dataclass(slots=True)
class ChoiceDelta:
    """What one choice (of `n`) produced since the previous step."""

    index: int
    text: str
    token_count: int
    logprobs: list[TokenLogprob] | None
    finish_reason: str | None  # "stop", "length" or "abort" once finished
    # What stopped it, as vLLM reports it: the stop string or token id; None for EOS or the length limit.
    stop_reason: int | str | None = None
    token_ids: Sequence[int] = ()  # the tokens themselves, for the output parsers


@dataclass(slots=True)
class GenerationStep:
    """One engine output for a request: deltas of the choices that advanced."""

    prompt_token_count: int
    deltas: list[ChoiceDelta]
    finished: bool
    token_count: int  # output tokens over all deltas
    # Log probabilities of the prompt tokens, when asked for (first step only).
    prompt_logprobs: list[TokenLogprob] | None = None
    # Seconds the request waited in the engine's queue before it was first scheduled (first step only).
    queue_s: float | None = None
    # Prompt tokens served from the prefix cache (first step only).
    cached_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ToolCallOut:
    """One finished tool call."""

    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it


@dataclass(slots=True)
class ToolCallFragment:
    """A streamed piece of a tool call: the first names it (id, name), the rest add argument text."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(slots=True)
class ParsedDelta:
    """What one streamed step added, split into reasoning, answer text and tool-call fragments."""

    reasoning: str | None = None
    content: str | None = None
    tool_calls: list[ToolCallFragment] = field(default_factory=list)


@dataclass(frozen=True)
class ParsedOutput:
    """A whole generated choice, split."""

    reasoning: str | None
    content: str | None
    tool_calls: list[ToolCallOut]
    reasoning_tokens: int


@dataclass(frozen=True)
class ToolRequest:
    """The tool fields of one chat request, in OpenAI's chat-completions form."""

    tools: list[dict[str, Any]] | None
    tool_choice: str | dict[str, Any] | None  # "none", "auto", "required" or {"type": "function", ...}
    parallel_tool_calls: bool = True
    include_reasoning: bool = True
