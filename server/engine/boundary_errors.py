"""vLLM's exceptions translated into ours, once, at the engine boundary."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from vllm.exceptions import VLLMValidationError
from vllm.v1.engine.exceptions import EngineDeadError

from server.engine.compat import GracefulHTTPError, VLLMClientError
from server.errors import ContextLengthError, EngineUnavailableError, InvalidRequestError

# The parameters vLLM's renderer names when a prompt is longer than the context (in characters before
# tokenizing, in tokens after).
PROMPT_TOO_LONG = frozenset({"input_text", "input_tokens"})


@contextlib.contextmanager
def prompt_length(param: str) -> Iterator[None]:
    """Turn vLLM's prompt length refusals into our `context_length_exceeded`, naming the request's field."""
    try:
        yield
    except VLLMValidationError as err:
        if err.parameter not in PROMPT_TOO_LONG:
            raise
        raise ContextLengthError(str(err.args[0]) if err.args else str(err), param=param) from err


@contextlib.contextmanager
def vllm_errors() -> Iterator[None]:
    """Translate vLLM's exceptions into ours at the boundary."""
    try:
        yield
    except EngineDeadError as err:
        raise EngineUnavailableError("The engine has stopped; the server cannot serve.") from err
    except VLLMValidationError as err:
        raise InvalidRequestError(str(err.args[0]) if err.args else str(err), param=err.parameter) from err
    except VLLMClientError as err:
        raise InvalidRequestError(str(err)) from err
    except GracefulHTTPError as err:
        raise EngineUnavailableError(err.message) from err
