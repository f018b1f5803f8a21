"""What differs between the vLLM releases the engine wrapper runs on: 0.24 (for torch 2.11) to 0.32.

Two exception classes, which 0.24 does not have and so never raises, and the environment-variable cache.
"""

from __future__ import annotations

try:
    from vllm.exceptions import GracefulHTTPError, VLLMClientError
except ImportError:  # vLLM < 0.25

    class GracefulHTTPError(Exception):  # type: ignore[no-redef]
        """Stands in for vLLM's admission refusal (raised by vLLM 0.25 and later only)."""

        message = ""

    class VLLMClientError(Exception):  # type: ignore[no-redef]
        """Stands in for vLLM's client-error base (raised by vLLM 0.25 and later only)."""


from vllm import envs


def freeze_vllm_env() -> None:
    """Cache vLLM's environment-variable lookups from now on, as vLLM's engine-core process does.

    vLLM reads some variables per output token in this process too (its iteration stats check
    `VLLM_COMPUTE_NANS_IN_LOGITS` for every token: two `os.getenv` calls each); the environment does not
    change once serving. A release without the cache keeps reading the environment.
    """
    enable = getattr(envs, "enable_envs_cache", None)
    if enable is not None:
        enable()


__all__ = ["GracefulHTTPError", "VLLMClientError", "freeze_vllm_env"]
