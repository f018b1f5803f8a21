"""An in-process engine double: deterministic words, one per step, and a record of aborts."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from server.engine.protocol import StepCallback
from server.engine.types import ChoiceDelta, GenerationStep, PreparedPrompt, SamplingSpec
from server.errors import InvalidRequestError

WORDS = ["alpha ", "beta ", "gamma ", "delta ", "epsilon "]


@functools.cache
def embedded_tokenizer() -> Any:
    """The embedded model's tokenizer (built once per process), whose markup vLLM's parsers know."""
    from server.default_model import build_tokenizer  # noqa: PLC0415

    return build_tokenizer()


@functools.cache
def output_parsers(tool_call_parser: str | None = None, reasoning_parser: str | None = None) -> Any:
    """vLLM's parsers over the embedded tokenizer, as the real engine builds them for these flags."""
    from server.engine.output_parsing import OutputParsers, ParserOptions  # noqa: PLC0415 - imports vLLM

    options = ParserOptions(
        tool_call_parser=tool_call_parser,
        enable_auto_tool_choice=tool_call_parser is not None,
        reasoning_parser=reasoning_parser,
    )
    return OutputParsers(embedded_tokenizer(), "fake-model", options)


class FakeEngine:
    """Generates `WORDS` in a loop; `step_delay_s` paces the steps."""

    served_model_name = "fake-model"
    served_model_names: tuple[str, ...] = ("fake-model",)
    max_model_len = 64
    max_num_seqs = 8
    model_path = "/models/fake"
    system_fingerprint: str | None = "fake-fingerprint"
    vocab_size = 1000
    accepts_images = False
    supports_prompt_logprobs = True
    lora_enabled = False
    max_lora_rank = 0
    max_loras = 0

    def __init__(
        self,
        step_delay_s: float = 0.0,
        *,
        script: str | None = None,
        tool_call_parser: str | None = None,
        reasoning_parser: str | None = None,
    ) -> None:
        self.step_delay_s = step_delay_s
        # With a script, every choice says it, a token of the embedded tokenizer per step, then stops.
        self.script = script
        self._parsers = (tool_call_parser, reasoning_parser)
        self.aborted: list[str] = []
        self.healthy = True
        self.is_dead = False
        self.on_step: StepCallback | None = None
        self.shut_down = False
        self.grammar_checks: list[str] = []
        self.specs: list[SamplingSpec] = []  # every spec `generate` was given
        self.template_kwargs: list[Mapping[str, Any] | None] = []  # every `render_chat`'s extra variables
        self.rendered: list[list[dict[str, Any]]] = []  # every `render_chat`'s messages

    @property
    def output_parsers(self) -> Any:
        """vLLM's output parsers for this engine's parser flags."""
        return output_parsers(*self._parsers)

    def observe_steps(self, on_step: StepCallback) -> None:
        self.on_step = on_step

    async def render_completion(
        self, prompt: str | list[int], *, add_special_tokens: bool = True
    ) -> PreparedPrompt:
        if isinstance(prompt, list):
            return PreparedPrompt(prompt, prompt)
        ids = list(range(len(prompt.split())))  # the first one plays the special token (BOS) part
        return PreparedPrompt(ids if add_special_tokens else ids[1:], prompt, prompt)

    def decode(self, token_ids: list[int]) -> str:
        return "".join(WORDS[token_id % len(WORDS)] for token_id in token_ids)

    def token_strings(self, token_ids: list[int]) -> list[str]:
        return [f"<{token_id}>" for token_id in token_ids]

    async def check_grammar(self, schema_json: str) -> None:
        self.grammar_checks.append(schema_json)

    async def render_chat(
        self,
        messages: Sequence[dict[str, str]],
        template_kwargs: Mapping[str, Any] | None = None,
        *,
        add_generation_prompt: bool = True,
    ) -> PreparedPrompt:
        self.template_kwargs.append(template_kwargs)
        self.rendered.append(list(messages))
        text = " ".join(message["content"] or "" for message in messages)
        # Two template tokens around the words, and one more for the generation prompt.
        return PreparedPrompt(list(range(len(text.split()) + 1 + add_generation_prompt)), text)

    async def generate(
        self,
        prompt: PreparedPrompt,
        spec: SamplingSpec,
        request_id: str,
        *,
        adapter: object = None,
        priority: int = 0,
    ) -> AsyncIterator[GenerationStep]:
        self.specs.append(spec)
        if spec.n > 1 and spec.temperature == 0:
            raise InvalidRequestError("n must be 1 when using greedy sampling")
        if self.script is not None:
            async for step in self._say(self.script, len(prompt.token_ids), spec.n):
                yield step
            return
        for step_index in range(spec.max_tokens or 1):
            await asyncio.sleep(self.step_delay_s)  # the engine's step time: the behaviour this double plays
            last = step_index == (spec.max_tokens or 1) - 1
            deltas = [
                ChoiceDelta(i, WORDS[(step_index + i) % len(WORDS)], 1, None, "length" if last else None)
                for i in range(spec.n)
            ]
            step = GenerationStep(len(prompt.token_ids), deltas, last, len(deltas))
            if step_index == 0:
                step.cached_tokens = len(prompt.token_ids) // 2  # as if a prefix were cached
            yield step

    async def _say(self, text: str, prompt_tokens: int, n: int) -> AsyncIterator[GenerationStep]:
        tokenizer = embedded_tokenizer()
        ids = tokenizer.encode(text)
        said = ""
        for position, token_id in enumerate(ids):
            await asyncio.sleep(self.step_delay_s)  # the engine's step time: the behaviour this double plays
            whole = tokenizer.decode(ids[: position + 1])
            piece, said = whole[len(said) :], whole
            last = position == len(ids) - 1
            deltas = [
                ChoiceDelta(i, piece, 1, None, "stop" if last else None, token_ids=[token_id])
                for i in range(n)
            ]
            yield GenerationStep(prompt_tokens, deltas, last, n)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def check_health(self) -> None:
        if not self.healthy:
            from server.errors import EngineUnavailableError  # noqa: PLC0415

            raise EngineUnavailableError("down")

    async def add_lora(self, ref: object) -> None:
        raise RuntimeError("the fake engine serves no adapters")

    async def remove_lora(self, adapter_id: int) -> None:
        raise RuntimeError("the fake engine serves no adapters")

    async def pin_lora(self, adapter_id: int) -> None:
        raise RuntimeError("the fake engine serves no adapters")

    async def collective_rpc(
        self, method: str, args: tuple[Any, ...] = (), timeout_s: float | None = None
    ) -> list[Any]:
        raise RuntimeError(f"the fake engine has no workers to call {method} on")

    def shutdown(self) -> None:
        self.shut_down = True
