"""An in-process engine double: deterministic words, one per step, and a record of aborts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from server.engine.protocol import StepCallback
from server.engine.types import ChoiceDelta, GenerationStep, PreparedPrompt, SamplingSpec
from server.errors import InvalidRequestError

WORDS = ["alpha ", "beta ", "gamma ", "delta ", "epsilon "]


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

    def __init__(self, step_delay_s: float = 0.0) -> None:
        self.step_delay_s = step_delay_s
        self.aborted: list[str] = []
        self.healthy = True
        self.is_dead = False
        self.on_step: StepCallback | None = None
        self.shut_down = False
        self.grammar_checks: list[str] = []
        self.specs: list[SamplingSpec] = []  # every spec `generate` was given
        self.template_kwargs: list[Mapping[str, Any] | None] = []  # every `render_chat`'s extra variables

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
        text = " ".join(message["content"] for message in messages)
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

    def shutdown(self) -> None:
        self.shut_down = True
