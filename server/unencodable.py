r"""Text UTF-8 cannot encode (lone surrogates): found anywhere in a parsed body, and written out escaped.

JSON may escape lone surrogates (`"\ud800"`) and Python's JSON decoder accepts them, but nothing
downstream can encode them: vLLM's engine messages, the tokenizer and our own answers would fail.
"""

from __future__ import annotations

from typing import Any

# The validation error type (and the error body's `code`) of text that cannot be encoded as UTF-8.
INVALID_ENCODING = "invalid_encoding"


def printable(text: str) -> str:
    r"""`text` with what UTF-8 cannot encode (lone surrogates) written as escapes such as `\ud800`."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def _bad_text(text: str) -> str | None:
    if text.isascii():
        return None
    try:
        text.encode()
    except UnicodeEncodeError as err:
        return f"U+{ord(text[err.start]):04X}"
    return None


def _holds_unencodable(value: Any) -> bool:
    # The common case, walked without paths: a body of many small items costs one pass, no strings built.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _bad_text(item) is not None:
                return True
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and _bad_text(key) is not None:
                    return True
                stack.append(child)
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def _dotted(node: tuple | None) -> str:
    parts = []
    while node is not None:
        node, key = node
        parts.append(str(key))
    return printable(".".join(reversed(parts)))


def first_unencodable(value: Any) -> tuple[str, str] | None:
    r"""Where the first text UTF-8 cannot encode sits in a parsed JSON body, and what it is.

    JSON may escape lone surrogates (`"\ud800"`) and Python's JSON decoder accepts them, but nothing
    downstream can encode them: vLLM's engine messages, the tokenizer and our own answers would fail.

    Returns:
        The dotted path to the field (keys included, escaped) and the offending code point, or None.
    """
    if not _holds_unencodable(value):
        return None
    stack: list[tuple[tuple | None, Any]] = [(None, value)]
    while stack:
        node, item = stack.pop()
        if isinstance(item, str):
            if (bad := _bad_text(item)) is not None:
                return _dotted(node), bad
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if isinstance(key, str) and (bad := _bad_text(key)) is not None:
                    return _dotted((node, key)), bad
                stack.append(((node, key), child))
        elif isinstance(item, list | tuple):
            stack.extend(((node, index), item[index]) for index in range(len(item) - 1, -1, -1))
    return None
