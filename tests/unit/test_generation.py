"""Pure request logic: context-length resolution."""

from __future__ import annotations

import pytest

from server.errors import ContextLengthError
from server.serving.prepare import resolve_max_tokens


def test_unset_max_tokens_takes_what_is_left_of_the_context() -> None:
    assert resolve_max_tokens(100, None, 1024, "prompt") == 924


def test_explicit_max_tokens_that_fits_is_kept() -> None:
    assert resolve_max_tokens(100, 924, 1024, "prompt") == 924


@pytest.mark.parametrize(("prompt", "requested"), [(100, 925), (1024, None), (2000, 1)])
def test_too_long_is_a_context_length_error(prompt: int, requested: int | None) -> None:
    with pytest.raises(ContextLengthError) as caught:
        resolve_max_tokens(prompt, requested, 1024, "messages")
    assert caught.value.param == "messages"
    assert "1024" in caught.value.message
