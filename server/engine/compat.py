"""What differs between the vLLM releases the engine wrapper runs on: 0.24 (for torch 2.11) to 0.32.

Only two exception classes, which 0.24 does not have and so never raises.
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


__all__ = ["GracefulHTTPError", "VLLMClientError"]
