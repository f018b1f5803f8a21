"""`VllmEngine`: the one owner of vLLM's `AsyncLLM`, speaking only the records in `server.engine.types`."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from vllm import AsyncEngineArgs, SamplingParams
from vllm.config import VllmConfig
from vllm.entrypoints.serve.utils.fingerprint import FingerprintMode, build_system_fingerprint
from vllm.lora.request import LoRARequest
from vllm.platforms import current_platform
from vllm.renderers import ChatParams, TokenizeParams
from vllm.renderers.inputs.preprocess import parse_model_prompt
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
from vllm.usage.usage_lib import UsageContext
from vllm.v1.engine.async_llm import AsyncLLM

from adapters.types import AdapterRef
from server.engine.boundary_errors import prompt_length, vllm_errors
from server.engine.compat import freeze_vllm_env
from server.engine.grammar_gate import GrammarGate, GrammarLimits
from server.engine.grammar_setup import open_grammar_gate
from server.engine.output_parsing import OutputParsers, ParserOptions
from server.engine.outputs import generation_step, queue_seconds, token_logprob
from server.engine.step_relay import StepRelay
from server.engine.types import GenerationStep, PreparedPrompt, SamplingSpec, TokenLogprob
from server.errors import EngineUnavailableError, InvalidRequestError

logger = logging.getLogger(__name__)

# vLLM resolves scheduler defaults by who asks: `vllm serve` builds its engine under the OpenAI-server
# context (on an H100: max_num_seqs 1024, max_num_batched_tokens 8192), a bare engine under ENGINE_CONTEXT
# (128 / 2048). wattserve is an OpenAI server: the same command line must give the same engine.
SERVER_USAGE_CONTEXT = UsageContext.OPENAI_API_SERVER


def engine_config(engine_args: AsyncEngineArgs) -> VllmConfig:
    """The engine configuration `vllm serve` resolves for the same engine arguments."""
    return engine_args.create_engine_config(usage_context=SERVER_USAGE_CONTEXT)


class VllmEngine:
    """Serve one base model with vLLM's `AsyncLLM` (continuous batching, paged attention)."""

    def __init__(
        self,
        llm: AsyncLLM,
        served_model_names: Sequence[str],
        steps: StepRelay,
        chat_template: str | None = None,
        grammar_gate: GrammarGate | None = None,
        *,
        template_defaults: dict[str, Any] | None = None,
        system_fingerprint: str | None = None,
        output_parsers: OutputParsers | None = None,
    ) -> None:
        self._llm = llm
        self.system_fingerprint = system_fingerprint
        self.output_parsers = output_parsers or OutputParsers(llm.get_tokenizer(), "-", ParserOptions())
        self._grammar_gate = grammar_gate  # None: schemas go to the engine's compile unchecked
        self._chat_template = chat_template  # None: the tokenizer's own
        self._template_defaults = template_defaults  # --default-chat-template-kwargs: a request's win
        self._steps = steps
        # Every alias answers, as in vLLM; the first names the model where one name is needed.
        self.served_model_names = tuple(served_model_names)
        self.served_model_name = self.served_model_names[0]
        self.max_model_len: int = llm.model_config.max_model_len
        self.max_num_seqs: int = llm.vllm_config.scheduler_config.max_num_seqs
        self.vocab_size: int = llm.model_config.get_vocab_size()
        self.accepts_images: bool = llm.model_config.is_multimodal_model
        self.model_path: str = llm.model_config.model
        # vLLM's CPU LoRA logits path fails on prompt logprobs (sampler indices sized for sampled
        # tokens only) and takes the engine down with it, so such requests are refused up front.
        self.supports_prompt_logprobs = not (llm.vllm_config.lora_config and current_platform.is_cpu())
        # The model's generation_config defaults apply where a request leaves a field unset, as in vLLM.
        self._defaults: dict[str, Any] = llm.model_config.get_diff_sampling_param()

    @classmethod
    def start(
        cls,
        engine_args: AsyncEngineArgs,
        chat_template: str | None = None,
        grammar_limits: GrammarLimits | None = None,
        template_defaults: dict[str, Any] | None = None,
        fingerprint: tuple[FingerprintMode, str | None] = ("full", None),
        *,
        parsers: ParserOptions | None = None,
    ) -> VllmEngine:
        """Create the engine (spawns vLLM's engine-core process and loads the model).

        Args:
            engine_args: vLLM's engine arguments, as parsed from the command line.
            chat_template: A Jinja chat template to use instead of the tokenizer's own.
            grammar_limits: How `check_grammar` bounds compiles (None: it checks nothing).
            template_defaults: Chat template variables every render gets unless the request sets them.
            fingerprint: vLLM's --fingerprint-mode and --fingerprint-value, for `system_fingerprint`.
            parsers: vLLM's tool-call parser flags (the engine's own --reasoning-parser joins them).

        Returns:
            The running engine.
        """
        steps = StepRelay()
        # As vLLM's own server builds it (vllm/entrypoints/launchers/api_server/entry.py), plus the relay.
        llm = AsyncLLM.from_vllm_config(
            engine_config(engine_args),
            usage_context=SERVER_USAGE_CONTEXT,
            enable_log_requests=engine_args.enable_log_requests,
            aggregate_engine_logging=engine_args.aggregate_engine_logging,
            disable_log_stats=engine_args.disable_log_stats,
            stat_loggers=[steps.for_engine],
        )
        names = engine_args.served_model_name
        if isinstance(names, str):
            names = [names]
        names = [str(name) for name in names or [engine_args.model]]
        # Before the heap is frozen below: the parser classes and the modules they import live as long.
        try:
            output_parsers = OutputParsers(
                llm.get_tokenizer(),
                names[0],
                replace(parsers or ParserOptions(), reasoning_parser=engine_args.reasoning_parser or None),
            )
        except ValueError:  # a parser flag that cannot work here: stop the engine started above
            llm.shutdown()
            raise
        freeze_vllm_env()
        # As vLLM's own server does once started: move the startup heap (torch, transformers, vLLM, the
        # model's Python objects: millions) out of the collector's sight, so the oldest-generation
        # collections that streaming's allocations trigger do not walk it again and again.
        gc.collect()
        gc.freeze()
        gate = None
        if grammar_limits is not None:
            gate = open_grammar_gate(llm.vllm_config, llm.get_tokenizer(), grammar_limits)
        return cls(
            llm,
            names,
            steps,
            chat_template,
            gate,
            template_defaults=template_defaults,
            system_fingerprint=build_system_fingerprint(llm.vllm_config, *fingerprint),
            output_parsers=output_parsers,
        )

    def observe_steps(self, on_step: Callable[[bool, int, int], None]) -> None:
        """Call `on_step(produced_output, running, waiting)` after every engine step, on the event loop."""
        self._steps.on_step = on_step

    async def render_completion(
        self, prompt: str | list[int], *, add_special_tokens: bool = True
    ) -> PreparedPrompt:
        """Tokenize a completion prompt (or take its token ids as given)."""
        renderer = self._llm.renderer
        with vllm_errors(), prompt_length("prompt"):
            (engine_input,) = await renderer.render_cmpl_async(
                [parse_model_prompt(self._llm.model_config, prompt)],
                self._tokenize_params(add_special_tokens),
            )
        text = prompt if isinstance(prompt, str) else None
        return PreparedPrompt(list(engine_input["prompt_token_ids"]), engine_input, text)

    def decode(self, token_ids: list[int]) -> str:
        """The text of some token ids."""
        return self._llm.get_tokenizer().decode(token_ids)

    def token_strings(self, token_ids: list[int]) -> list[str]:
        """Each token id's own string in the vocabulary."""
        return self._llm.get_tokenizer().convert_ids_to_tokens(token_ids)

    async def render_chat(
        self,
        messages: Sequence[dict[str, Any]],
        template_kwargs: Mapping[str, Any] | None = None,
        *,
        add_generation_prompt: bool = True,
    ) -> PreparedPrompt:
        """Apply the chat template, with the request's extra variables as vLLM passes them, and tokenize.

        A message whose content is a list of OpenAI parts (images) goes through vLLM's multimodal input
        processing, which loads the images and puts them in the prompt it returns.
        """
        renderer = self._llm.renderer
        with vllm_errors(), prompt_length("messages"):
            try:
                _, (engine_input,) = await renderer.render_chat_async(
                    [list(messages)],
                    ChatParams(
                        chat_template=self._chat_template,
                        chat_template_content_format=(
                            "openai" if any(isinstance(m["content"], list) for m in messages) else "string"
                        ),
                        chat_template_kwargs={
                            **(template_kwargs or {}),
                            "add_generation_prompt": add_generation_prompt,
                        },
                    ).with_defaults(self._template_defaults),
                    self._tokenize_params(False),
                )
            except ValueError as err:  # e.g. the model has no chat template
                raise InvalidRequestError(f"Cannot apply the chat template: {err}") from err
            except TimeoutError as err:  # vLLM's VLLM_CHAT_TEMPLATE_RENDER_TIMEOUT
                raise InvalidRequestError(f"Rendering the chat template took too long: {err}") from err
        return PreparedPrompt(list(engine_input["prompt_token_ids"]), engine_input)

    def _tokenize_params(self, add_special_tokens: bool) -> TokenizeParams:
        # As vLLM's server builds them (ChatCompletionRequest/CompletionRequest.build_tok_params): the
        # context bounds the prompt, so the tokenizer stops one token past it instead of encoding
        # megabytes, and text too long even for the longest tokens is refused before tokenizing. The
        # output length is checked with the token count, in serving.prepare.
        return TokenizeParams(
            max_total_tokens=self.max_model_len,
            max_total_tokens_param="max_model_len",
            add_special_tokens=add_special_tokens,
        )

    async def check_grammar(self, schema_json: str) -> None:
        """Return once a JSON schema is known to compile within the deadline (see `grammar_gate`).

        Raises:
            GrammarTooComplexError: It does not.
        """
        if self._grammar_gate is not None:
            await self._grammar_gate.check(schema_json)

    def _sampling_params(self, spec: SamplingSpec) -> SamplingParams:
        chosen = {
            "temperature": spec.temperature,
            "top_p": spec.top_p,
            "top_k": spec.top_k,
            "min_p": spec.min_p,
            "presence_penalty": spec.presence_penalty,
            "frequency_penalty": spec.frequency_penalty,
            "repetition_penalty": spec.repetition_penalty,
        }
        values = {key: value for key, value in self._defaults.items() if key in chosen}
        values.update({key: value for key, value in chosen.items() if value is not None})
        constraint = {
            "json": spec.json_schema,
            "json_object": spec.json_object or None,
            "regex": spec.regex,
            "choice": spec.choice,
            "grammar": spec.grammar,
            "structural_tag": spec.structural_tag,
        }
        chosen_constraint = {key: value for key, value in constraint.items() if value is not None}
        structured = None
        if chosen_constraint:
            structured = StructuredOutputsParams(**chosen_constraint, **spec.structured_options)
        return SamplingParams(
            n=spec.n,
            max_tokens=spec.max_tokens,
            seed=spec.seed,
            stop=spec.stop or None,
            min_tokens=spec.min_tokens,
            ignore_eos=spec.ignore_eos,
            skip_special_tokens=spec.skip_special_tokens,
            include_stop_str_in_output=spec.include_stop_str_in_output,
            logprobs=spec.logprobs,
            prompt_logprobs=spec.prompt_logprobs,
            structured_outputs=structured,
            # Deltas even for non-streamed answers: energy is attributed to the tokens of each interval.
            output_kind=RequestOutputKind.DELTA,
            **values,
        )

    async def generate(
        self,
        prompt: PreparedPrompt,
        spec: SamplingSpec,
        request_id: str,
        *,
        adapter: AdapterRef | None = None,
        priority: int = 0,
    ) -> AsyncIterator[GenerationStep]:
        """Generate for one prompt, yielding what each engine step added.

        Args:
            prompt: A prompt from `render_completion` or `render_chat`.
            spec: Sampling wishes; `max_tokens` must already be resolved.
            request_id: Unique id; `abort` takes the same id.
            adapter: The LoRA adapter version to apply, or None for the base model.
            priority: Scheduling priority (lower first) under vLLM's `priority` policy; ignored by `fcfs`.

        Yields:
            One `GenerationStep` per engine output.

        Raises:
            InvalidRequestError: vLLM refused the parameters.
            EngineUnavailableError: The engine is dead or refused admission.
        """
        with vllm_errors():
            params = self._sampling_params(spec)
            lora = _lora_request(adapter) if adapter is not None else None
            top_k, prompt_tokens, first = spec.logprobs, len(prompt.token_ids), True
            async for output in self._llm.generate(
                prompt.engine_input, params, request_id, lora_request=lora, priority=priority
            ):
                step = generation_step(output, prompt_tokens, top_k)
                if first:
                    first = False
                    step.queue_s = queue_seconds(output)
                    step.cached_tokens = output.num_cached_tokens
                    step.prompt_logprobs = self._prompt_logprobs(output, spec.prompt_logprobs)
                yield step

    def _prompt_logprobs(self, output: Any, top_k: int | None) -> list[TokenLogprob] | None:
        if top_k is None or not output.prompt_logprobs:
            return None
        token_ids = output.prompt_token_ids
        # Nothing predicts the first prompt token, so vLLM has no entry (and no decoded text) for it.
        first = TokenLogprob(self._llm.get_tokenizer().decode(token_ids[:1]), None, [])
        return [first] + [
            token_logprob(token_id, entry, top_k)
            for token_id, entry in zip(token_ids[1:], output.prompt_logprobs[1:], strict=False)
        ]

    @property
    def is_dead(self) -> bool:
        """Whether vLLM's engine has failed (it never recovers; the process should be restarted)."""
        return self._llm.errored

    @property
    def lora_enabled(self) -> bool:
        """Whether the engine was started with LoRA support."""
        return self._llm.vllm_config.lora_config is not None

    @property
    def max_lora_rank(self) -> int:
        """The largest adapter rank the engine accepts (`--max-lora-rank`)."""
        lora_config = self._llm.vllm_config.lora_config
        return lora_config.max_lora_rank if lora_config is not None else 0

    @property
    def max_loras(self) -> int:
        """How many adapters the engine's slots hold at once (`--max-loras`); 0 without LoRA."""
        lora_config = self._llm.vllm_config.lora_config
        return lora_config.max_loras if lora_config is not None else 0

    async def add_lora(self, ref: AdapterRef) -> None:
        """Load an adapter version into the engine's adapter cache.

        Raises:
            RuntimeError: The engine refused it (the engine itself keeps serving).
        """
        with vllm_errors():
            if not await self._llm.add_lora(_lora_request(ref)):
                raise RuntimeError(f"vLLM did not add adapter {ref.engine_name}")

    async def remove_lora(self, adapter_id: int) -> None:
        """Drop an adapter version from every engine cache."""
        await self._llm.remove_lora(adapter_id)

    async def pin_lora(self, adapter_id: int) -> None:
        """Keep an adapter version resident in the engine (never evicted by its LRU)."""
        await self._llm.pin_lora(adapter_id)

    async def abort(self, request_id: str) -> None:
        """Stop a request in the engine and free its KV blocks."""
        await self._llm.abort(request_id)

    async def check_health(self) -> None:
        """Raise `EngineUnavailableError` unless the engine can serve."""
        if self._llm.errored:
            raise EngineUnavailableError("The engine has stopped; the server cannot serve.")
        with vllm_errors():
            await self._llm.check_health()

    async def collective_rpc(
        self, method: str, args: tuple[Any, ...] = (), timeout_s: float | None = None
    ) -> list[Any]:
        """Call a worker-extension method (see `worker_energy`) in every worker; one answer per worker."""
        # By keyword: vLLM orders them (method, timeout, args, kwargs), not as this method does.
        return list(await self._llm.collective_rpc(method, timeout=timeout_s, args=args))

    def shutdown(self) -> None:
        """Stop the engine-core process and the grammar-compile processes."""
        if self._grammar_gate is not None:
            self._grammar_gate.close()
        self._llm.shutdown()


def _lora_request(ref: AdapterRef) -> LoRARequest:
    # One vLLM name per version: vLLM keys prefix-cache blocks and LoRARequest equality on the name.
    return LoRARequest(ref.engine_name, ref.adapter_id, str(ref.path))
