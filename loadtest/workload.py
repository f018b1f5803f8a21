"""Seeded request generation: prompts, input and output lengths, the model and the service tier of each."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from loadtest.sampling import LengthDist, ModelMix, ServiceTierMix

__all__ = [
    "BUILTIN_PROMPTS",
    "RequestSpec",
    "WorkloadConfig",
    "build_requests",
]

Api = Literal["chat", "completions"]

# Common English words; random draws from them make prompts that share no prefix.
_WORD_TEXT = """the of and to in is you that it he was for on are as with his they at be this have from or one
    had by word but not what all were we when your can said there use an each which she do how their if
    will up other about out many then them these so some her would make like him into time has look two
    more write go see number no way could people my than first water been call who oil its now find long
    down day did get come made may part over new sound take only little work know place year live me back
    give most very after thing our just name good sentence man think say great where help through much
    before line right too mean old any same tell boy follow came want show also around form three small
    set put end does another well large must big even such because turn here why ask went men read need
    land different home us move try kind hand picture again change off play spell air away animal house
    point page letter mother answer found study still learn should world high every near add food
    between own below country plant last school father keep tree never start city earth eye light"""
_WORDS = tuple(_WORD_TEXT.split())

BUILTIN_PROMPTS: tuple[str, ...] = (
    "What is the capital of Australia, and why was it chosen over Sydney and Melbourne?",
    "Explain the difference between a process and a thread to a new programmer.",
    "Write a haiku about a rainy morning in a busy city.",
    "Summarise the causes of the French Revolution in five bullet points.",
    "How does a refrigerator keep food cold? Keep it simple.",
    "Translate into French: 'The meeting has been moved to Thursday afternoon.'",
    "Give me three ideas for a vegetarian dinner that takes under thirty minutes.",
    "Write a Python function that checks whether a string is a palindrome.",
    "Why is the sky blue during the day and red at sunset?",
    "Draft a polite email asking a colleague to review my pull request by Friday.",
    "What are the main trade-offs between SQL and NoSQL databases?",
    "Tell a short story about a lighthouse keeper who finds a message in a bottle.",
    "List the planets of the solar system in order with one fact about each.",
    "Explain what a Fourier transform does without using equations.",
    "What should I pack for a three-day hiking trip in the mountains?",
    "Compare the economic policies of Keynes and Hayek in a short paragraph.",
    "How do vaccines train the immune system?",
    "Write a limerick about a cat who learned to code.",
    "Describe how to make a good cup of pour-over coffee, step by step.",
    "What is the time complexity of quicksort, and when does it degrade?",
)


@dataclass(frozen=True)
class RequestSpec:
    """One request to send: everything but the transport.

    Attributes:
        model: Model (or adapter) name for the `model` field.
        api: Which OpenAI endpoint the request is for.
        prompt: The prompt text, for the completions API.
        messages: The chat messages, for the chat API.
        max_tokens: Upper bound on generated tokens.
        ignore_eos: Ask the server to keep generating past EOS (a vLLM extension).
        min_tokens: Lower bound on generated tokens (a vLLM extension).
        service_tier: OpenAI's `service_tier` (`auto`, `default`, `flex`, `priority`); None sends none.
    """

    model: str
    api: Api
    prompt: str | None
    messages: list[dict] | None
    max_tokens: int
    ignore_eos: bool = False
    min_tokens: int | None = None
    service_tier: str | None = None

    def __post_init__(self) -> None:
        if self.api == "chat" and self.messages is None:
            raise ValueError("a chat request needs messages")
        if self.api == "completions" and self.prompt is None:
            raise ValueError("a completions request needs a prompt")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    def body(self) -> dict:
        """The streaming JSON body; the vLLM extensions and the service tier appear only when set."""
        body: dict[str, Any] = {"model": self.model}
        body.update({"messages": self.messages} if self.api == "chat" else {"prompt": self.prompt})
        body.update(max_tokens=self.max_tokens, stream=True, stream_options={"include_usage": True})
        if self.ignore_eos:
            body["ignore_eos"] = True
        if self.min_tokens is not None:
            body["min_tokens"] = self.min_tokens
        if self.service_tier is not None:
            body["service_tier"] = self.service_tier
        return body


class WorkloadConfig(BaseModel):
    """What requests to generate.

    Attributes:
        source: `synthetic` (random words or tokens), `builtin` (a small set of real prompts) or
            `jsonl` (prompts from `dataset`).
        dataset: A JSONL file of `{"prompt": ...}` or `{"messages": [...]}` lines, each with an
            optional `max_tokens`; required by and only used with `source="jsonl"`.
        api: Which endpoint the requests are for.
        input_len: A `LengthDist` spec for synthetic prompt lengths, in tokens.
        output_len: A `LengthDist` spec for `max_tokens` (a JSONL line's own `max_tokens` wins).
        models: A `ModelMix` spec.
        service_tiers: A `ServiceTierMix` spec; None leaves `service_tier` out of every request.
        ignore_eos: Send vLLM's `ignore_eos`.
        min_tokens: Send vLLM's `min_tokens = max_tokens`, so each request produces exactly its
            output length.
        tokenizer: A `transformers.AutoTokenizer` name or path, for synthetic prompts
            whose length is close to `input_len` in that tokenizer's tokens.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["synthetic", "builtin", "jsonl"] = "synthetic"
    dataset: Path | None = None
    api: Api = "chat"
    input_len: str = "64"
    output_len: str = "64"
    models: str
    service_tiers: str | None = None
    ignore_eos: bool = False
    min_tokens: bool = False
    tokenizer: str | None = None

    @field_validator("input_len", "output_len")
    @classmethod
    def _check_length(cls, spec: str) -> str:
        LengthDist.parse(spec)
        return spec

    @field_validator("models")
    @classmethod
    def _check_models(cls, spec: str) -> str:
        ModelMix.parse(spec)
        return spec

    @field_validator("service_tiers")
    @classmethod
    def _check_service_tiers(cls, spec: str | None) -> str | None:
        if spec is not None:
            ServiceTierMix.parse(spec)
        return spec

    @model_validator(mode="after")
    def _check_dataset(self) -> WorkloadConfig:
        if self.source == "jsonl" and self.dataset is None:
            raise ValueError("source='jsonl' needs a dataset")
        if self.source != "jsonl" and self.dataset is not None:
            raise ValueError("dataset is only used with source='jsonl'")
        return self


@dataclass(frozen=True)
class _Entry:
    """One prompt: text or messages, and an optional own `max_tokens`."""

    prompt: str | None = None
    messages: list[dict] | None = None
    max_tokens: int | None = None


def _load_jsonl(path: Path, api: Api) -> list[_Entry]:
    """Read a JSONL dataset, checking every line against the API.

    Raises:
        ValueError: On bad JSON, a malformed line, or a messages line for the completions API;
            the message names the line number.
    """
    entries = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                entries.append(_parse_line(line, f"{path}:{number}", api))
    if not entries:
        raise ValueError(f"{path}: no prompts in dataset")
    return entries


def _parse_line(line: str, where: str, api: Api) -> _Entry:
    try:
        item = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"{where}: bad JSON: {exc}") from None
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected a JSON object")
    max_tokens = item.get("max_tokens")
    if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
        raise ValueError(f"{where}: max_tokens must be an integer >= 1")
    prompt, messages = item.get("prompt"), item.get("messages")
    if (prompt is None) == (messages is None):
        raise ValueError(f"{where}: expected exactly one of 'prompt' or 'messages'")
    if prompt is not None:
        if not isinstance(prompt, str):
            raise ValueError(f"{where}: 'prompt' must be a string")
        return _Entry(prompt=prompt, max_tokens=max_tokens)
    if api == "completions":
        raise ValueError(f"{where}: a 'messages' line cannot be sent to the completions API")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ValueError(f"{where}: 'messages' must be a non-empty list of objects")
    return _Entry(messages=messages, max_tokens=max_tokens)


def _shuffled_cycle(rng: np.random.Generator, size: int, count: int) -> np.ndarray:
    """`count` indices into `size` items: each used once per pass, in a fresh random order per pass."""
    passes = -(-count // size)
    return np.concatenate([rng.permutation(size) for _ in range(passes)])[:count]


def _word_prompts(lengths: np.ndarray, rng: np.random.Generator) -> list[str]:
    """Prompts of `lengths` random common words.

    The prompt length in tokens is then only approximate (a word is about 1.3 tokens); the
    server's reported usage gives the real count.
    """
    words = np.asarray(_WORDS)
    picks = words[rng.integers(len(words), size=int(lengths.sum()))]
    bounds = np.cumsum(lengths)[:-1]
    return [" ".join(chunk) for chunk in np.split(picks, bounds)]


def _token_prompts(lengths: np.ndarray, rng: np.random.Generator, tokenizer_name: str) -> list[str]:
    """Prompts decoded from `lengths` random non-special token ids of a tokenizer."""
    # Imported here: transformers is slow to import and only this optional path needs it.
    from transformers import AutoTokenizer  # noqa: PLC0415

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_name)
    allowed = np.setdiff1d(np.arange(tokenizer.vocab_size), tokenizer.all_special_ids)
    return [tokenizer.decode(allowed[rng.integers(len(allowed), size=int(n))].tolist()) for n in lengths]


def _prompts(config: WorkloadConfig, count: int, input_rng: np.random.Generator) -> list[_Entry]:
    if config.source == "synthetic":
        lengths = LengthDist.parse(config.input_len).sample(input_rng, count)
        if config.tokenizer:
            texts = _token_prompts(lengths, input_rng, config.tokenizer)
        else:
            texts = _word_prompts(lengths, input_rng)
        return [_Entry(prompt=text) for text in texts]
    if config.source == "builtin":
        pool = [_Entry(prompt=text) for text in BUILTIN_PROMPTS]
    else:
        assert config.dataset is not None  # checked by WorkloadConfig
        pool = _load_jsonl(config.dataset, config.api)
    return [pool[i] for i in _shuffled_cycle(input_rng, len(pool), count)]


def build_requests(config: WorkloadConfig, count: int, seed: int) -> list[RequestSpec]:
    """Generate `count` requests, identical for the same config and seed.

    Args:
        config: What to generate.
        count: How many requests.
        seed: Seed of every random choice.

    Returns:
        The requests, in sending order.

    Raises:
        ValueError: If `count` is negative or the dataset is invalid.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if count == 0:
        return []
    # Independent streams per aspect, so that changing the model or tier mix does not change the prompts.
    # Spawned children depend only on their position: the fourth leaves the first three as they were.
    model_rng, input_rng, output_rng, tier_rng = np.random.default_rng(seed).spawn(4)
    models = ModelMix.parse(config.models).sample(model_rng, count)
    tiers: list[str | None] = [None] * count
    if config.service_tiers is not None:
        tiers = list(ServiceTierMix.parse(config.service_tiers).sample(tier_rng, count))
    output_lens = LengthDist.parse(config.output_len).sample(output_rng, count)
    requests = []
    prompts = _prompts(config, count, input_rng)
    for model, tier, entry, sampled in zip(models, tiers, prompts, output_lens, strict=True):
        max_tokens = entry.max_tokens if entry.max_tokens is not None else int(sampled)
        messages = entry.messages
        if config.api == "chat" and messages is None:
            messages = [{"role": "user", "content": entry.prompt}]
        elif messages is not None:
            # A fresh copy per request: a dataset line may be reused, and callers may edit bodies.
            messages = [dict(message) for message in messages]
        requests.append(
            RequestSpec(
                model=model,
                api=config.api,
                prompt=entry.prompt if config.api == "completions" else None,
                messages=messages if config.api == "chat" else None,
                max_tokens=max_tokens,
                ignore_eos=config.ignore_eos,
                min_tokens=max_tokens if config.min_tokens else None,
                service_tier=tier,
            )
        )
    return requests
