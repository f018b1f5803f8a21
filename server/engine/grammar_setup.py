"""Build the grammar gate for vLLM's engine: its tokenizer's vocabulary, its backend, its whitespace."""

from __future__ import annotations

import logging

from vllm.config import VllmConfig
from vllm.tokenizers import TokenizerLike
from vllm.utils.mistral import is_mistral_tokenizer

from server.engine.grammar_gate import GrammarGate, GrammarLimits
from server.engine.grammar_process import CompileProcess, start_forkserver

logger = logging.getLogger(__name__)


def open_grammar_gate(
    vllm_config: VllmConfig, tokenizer: TokenizerLike, limits: GrammarLimits
) -> GrammarGate | None:
    """Start the compile processes for the engine's tokenizer; None when the gate does not apply.

    It does not apply with the deadline at 0, with a structured-output backend other than xgrammar (the
    others compile differently: a verdict measured with xgrammar would not bound them), or with a Mistral
    tokenizer (vLLM builds xgrammar's vocabulary for those its own way).
    """
    backend = vllm_config.structured_outputs_config.backend
    if limits.timeout_s <= 0:
        return None
    if backend not in ("auto", "xgrammar") or is_mistral_tokenizer(tokenizer):
        logger.warning(
            "response_format schemas are not compiled before the engine's compile with backend %r "
            "or a Mistral tokenizer; --max-grammar-compile-seconds does not apply",
            backend,
        )
        return None
    import xgrammar as xgr  # noqa: PLC0415 - the server's own process needs it only here, once

    # As vLLM's XgrammarBackend builds it (backend_xgrammar.py, __post_init__), so compiles cost the same.
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vllm_config.model_config.get_vocab_size())
    info_json = info.serialize_json()
    any_whitespace = not vllm_config.structured_outputs_config.disable_any_whitespace
    start_forkserver()
    gate = GrammarGate(lambda: CompileProcess(info_json, any_whitespace), limits)
    gate.prestart()
    return gate
