"""The engine boundary: the only place vLLM is imported (lazily, so plain records import fast)."""

from server.engine.types import ChoiceDelta, GenerationStep, PreparedPrompt, SamplingSpec, TokenLogprob

__all__ = ["ChoiceDelta", "GenerationStep", "PreparedPrompt", "SamplingSpec", "TokenLogprob"]
