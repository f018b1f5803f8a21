"""vLLM's request outputs as wattserve's engine steps: the deltas of each choice, their logprobs, timings."""

from __future__ import annotations

from typing import Any

from server.engine.types import ChoiceDelta, GenerationStep, TokenLogprob


def generation_step(output: Any, prompt_tokens: int, top_k: int | None) -> GenerationStep:
    """One step from a vLLM `RequestOutput` (delta mode: each output holds what the step added)."""
    choices = output.outputs
    if top_k is None and len(choices) == 1:  # the common case: one choice, no logprobs
        choice = choices[0]
        ids = choice.token_ids
        count = len(ids)
        finish, stop = choice.finish_reason, choice.stop_reason
        deltas = [ChoiceDelta(choice.index, choice.text, count, None, finish, stop, ids)]
    else:
        deltas = [_choice_delta(choice, top_k) for choice in choices]
        count = sum(delta.token_count for delta in deltas)
    return GenerationStep(prompt_tokens, deltas, output.finished, count)


def queue_seconds(output: Any) -> float | None:
    """Seconds the request waited in the engine's queue before it was first scheduled, if vLLM says."""
    stats = getattr(output, "metrics", None)
    if stats is None or not getattr(stats, "scheduled_ts", 0) or not getattr(stats, "queued_ts", 0):
        return None
    return max(0.0, stats.scheduled_ts - stats.queued_ts)


def token_logprob(token_id: int, entry: dict[int, Any], top_k: int) -> TokenLogprob:
    """The chosen token's logprob and the `top_k` best alternatives, from one vLLM logprobs entry."""
    chosen = entry[token_id]
    ranked = sorted(entry.values(), key=lambda item: item.rank if item.rank is not None else 0)
    top = [(item.decoded_token or "", float(item.logprob)) for item in ranked[:top_k]]
    return TokenLogprob(chosen.decoded_token or "", float(chosen.logprob), top)


def _choice_delta(choice: Any, top_k: int | None) -> ChoiceDelta:
    logprobs = None
    if top_k is not None and choice.logprobs is not None:
        logprobs = [
            token_logprob(token_id, entry, top_k)
            for token_id, entry in zip(choice.token_ids, choice.logprobs, strict=False)
        ]
    return ChoiceDelta(
        index=choice.index,
        text=choice.text,
        token_count=len(choice.token_ids),
        logprobs=logprobs,
        finish_reason=choice.finish_reason,
        stop_reason=choice.stop_reason,
        token_ids=choice.token_ids,
    )
