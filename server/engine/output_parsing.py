"""Reasoning and tool calls read out of generated text by vLLM's own parsers, as `vllm serve` reads them.

vLLM composes one `Parser` per request from the `--reasoning-parser` and `--tool-call-parser` it was
started with (`ParserManager`); the same classes do the work here, so a model's tool-call and reasoning
formats parse exactly as on vLLM's server, plugins (`--tool-parser-plugin`) included. What crosses the
engine boundary are the plain records below; vLLM's request and message classes stay in this module.

`tool_choice` `required` or a named function needs no model-specific parser: the parser's
`adjust_request` turns the tools into a JSON schema that structured outputs enforce, and the constrained
JSON is the call. With no `--tool-call-parser`, a parser that only does that stands in, so forced calls
work on any model, the embedded one included.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest as VllmChatRequest
from vllm.tool_parsers import ToolParser, ToolParserManager

from server.engine.types import ParsedDelta, ParsedOutput, ToolCallFragment, ToolCallOut, ToolRequest

try:  # vLLM with the unified parser (reasoning and tools in one class per request)
    from vllm.parser.parser_manager import ParserManager
except ImportError:  # pragma: no cover - older vLLM in the supported range
    ParserManager = None

try:
    from vllm.entrypoints.generate.base.protocol import DeltaMessage, ExtractedToolCallInformation
except ImportError:  # pragma: no cover - before the protocol classes moved
    from vllm.entrypoints.openai.protocol import DeltaMessage, ExtractedToolCallInformation


def new_tool_call_id() -> str:
    """An id for a tool call the parser did not name, in vLLM's form."""
    return f"chatcmpl-tool-{uuid.uuid4().hex}"


class _ForcedCallsOnly(ToolParser):
    """The tool parser when the server has none: `required` and named calls, which need no model format.

    `auto` is refused before generation without `--enable-auto-tool-choice`, as vLLM refuses it, so this
    parser never has to find calls in free text.
    """

    supports_required_and_named = True

    def extract_tool_calls(self, model_output: str, request: Any) -> ExtractedToolCallInformation:
        """No calls in free text: it is all content."""
        return ExtractedToolCallInformation(tools_called=False, tool_calls=[], content=model_output)

    def extract_tool_calls_streaming(self, *args: Any, **kwargs: Any) -> DeltaMessage | None:
        """No calls in free text: the delta is content."""
        delta_text = kwargs.get("delta_text", args[2] if len(args) > 2 else "")
        return DeltaMessage(content=delta_text) if delta_text else None


@dataclass(frozen=True)
class ParserOptions:
    """vLLM's parser flags, and the engine's `--reasoning-parser`.

    `--tool-call-parser`, `--enable-auto-tool-choice`, `--tool-parser-plugin`, `--tool-strict-level`.
    """

    tool_call_parser: str | None = None
    enable_auto_tool_choice: bool = False
    tool_parser_plugin: str | None = None
    tool_strict_level: str = "auto"
    reasoning_parser: str | None = None


class OutputParsers:
    """The server's parser class, composed once at startup as vLLM composes it; one reader per choice.

    Raises (at construction) `ValueError` naming the flag when a parser is unknown or cannot work with
    the model's tokenizer, so the server refuses to start rather than failing every request.
    """

    def __init__(self, tokenizer: Any, model_name: str, options: ParserOptions) -> None:
        if ParserManager is None:
            raise ValueError(
                "this vLLM has no unified output parser (vllm.parser); tool calling and --reasoning-parser "
                "need vLLM 0.32"
            )
        if options.tool_parser_plugin:
            ToolParserManager.import_tool_parser(options.tool_parser_plugin)
        self._tokenizer = tokenizer
        self.auto_tools = options.enable_auto_tool_choice and options.tool_call_parser is not None
        self.reasoning = options.reasoning_parser is not None
        try:
            if self.auto_tools:  # exactly the parser vLLM's server composes for these flags
                self._parser_cls = ParserManager.get_parser(
                    tool_parser_name=options.tool_call_parser,
                    reasoning_parser_name=options.reasoning_parser,
                    enable_auto_tools=True,
                    model_name=model_name,
                    tool_strict_level=options.tool_strict_level,
                )
            else:
                reasoning_cls = ParserManager.get_reasoning_parser(options.reasoning_parser)
                self._parser_cls = _compose(reasoning_cls, _ForcedCallsOnly, options.tool_strict_level)
        except TypeError as err:  # vLLM's way of saying a parser is not registered
            raise ValueError(str(err)) from err
        try:
            self._parser_cls(tokenizer)  # as vLLM checks at startup: markers must be in the vocabulary
        except Exception as err:
            raise ValueError(
                f"the parsers cannot be used with the tokenizer of {model_name!r}: {err}"
            ) from err

    def needed(self, tools: ToolRequest) -> bool:
        """Whether a request's output must be parsed at all (plain chats take the fast path)."""
        return self.reasoning or bool(tools.tools and tools.tool_choice != "none")

    def for_request(self, tools: ToolRequest) -> RequestParsing:
        """The parsing of one request: its constraint and a reader per choice."""
        return RequestParsing(self._parser_cls, self._tokenizer, tools, self.auto_tools, self.reasoning)


def _compose(reasoning_cls: Any, tool_cls: Any, strict_level: str) -> Any:
    from vllm.parser.abstract_parser import DelegatingParser  # noqa: PLC0415 - present with ParserManager
    from vllm.tool_parsers.tool_strict_level import ToolStrictLevel  # noqa: PLC0415

    return type(
        "WattserveParser",
        (DelegatingParser,),
        {
            "reasoning_parser_cls": reasoning_cls,
            "tool_parser_cls": tool_cls,
            "tool_strict_level": ToolStrictLevel.from_name(strict_level),
        },
    )


class RequestParsing:
    """One request's parsing: the structured-output schema its tool choice needs, and choice readers."""

    def __init__(  # noqa: PLR0913, PLR0917 - the server's parsing, and the request's tools
        self, parser_cls: Any, tokenizer: Any, tools: ToolRequest, auto_tools: bool, reasoning: bool
    ) -> None:
        self.counts_reasoning = reasoning  # a reasoning parser is configured: usage counts its tokens
        self._parser_cls = parser_cls
        self._tokenizer = tokenizer
        self._auto_tools = auto_tools
        self._parallel = tools.parallel_tool_calls
        request = VllmChatRequest.model_validate(
            {
                "model": "-",
                "messages": [],
                "tools": tools.tools,
                "tool_choice": tools.tool_choice if tools.tools else "none",
                "parallel_tool_calls": tools.parallel_tool_calls,
                "include_reasoning": tools.include_reasoning,
            }
        )
        self._request = parser_cls(tokenizer, request.tools).adjust_request(request)
        outputs = self._request.structured_outputs
        schema = getattr(outputs, "json", None) if outputs is not None else None
        # `required` and named choices: the JSON schema the constrained output must follow, or, with a
        # parser that knows the model's call format, a structural tag (calls in that format, arguments
        # following each tool's schema).
        self.constraint_schema: dict[str, Any] | str | None = schema
        tag = getattr(outputs, "structural_tag", None) if outputs is not None else None
        self.structural_tag: str | None = tag if tag is None or isinstance(tag, str) else json.dumps(tag)
        self.skip_special_tokens: bool = self._request.skip_special_tokens

    def reader(self, prompt_token_ids: Sequence[int]) -> ChoiceReader:
        """A reader for one choice (parsers keep stream state, so each choice gets its own)."""
        parser = self._parser_cls(self._tokenizer, self._request.tools)
        parser.set_prompt_token_ids(prompt_token_ids)
        return ChoiceReader(parser, self._request, list(prompt_token_ids), self._auto_tools, self._parallel)


class ChoiceReader:
    """Splits one choice's output, streamed step by step or whole."""

    def __init__(
        self, parser: Any, request: Any, prompt_token_ids: list[int], auto_tools: bool, parallel: bool
    ) -> None:
        self._parser = parser
        self._request = request
        self._prompt_token_ids: list[int] | None = prompt_token_ids
        self._auto_tools = auto_tools
        self._parallel = parallel
        self._ids: dict[int, str] = {}  # tool-call index -> id, for fragments the parser left unnamed
        self.called_tools = False

    def feed(self, text: str, token_ids: Sequence[int], *, finished: bool) -> ParsedDelta | None:
        """The split of one streamed step (None: nothing to send yet)."""
        prompt, self._prompt_token_ids = self._prompt_token_ids, None
        delta = self._parser.parse_delta(text, list(token_ids), self._request, prompt, finished=finished)
        if delta is None:
            return None
        fragments = []
        for call in delta.tool_calls or ():
            if not self._parallel and call.index > 0:
                continue
            function = call.function
            name = function.name if function is not None else None
            if call.index not in self._ids:
                self._ids[call.index] = call.id or new_tool_call_id()
                call_id = self._ids[call.index]
            else:
                call_id = None
            arguments = (function.arguments if function is not None else None) or ""
            fragments.append(ToolCallFragment(call.index, call_id, name, arguments))
        if fragments:
            self.called_tools = True
        if not (delta.reasoning or delta.content or fragments):
            return None
        return ParsedDelta(delta.reasoning or None, delta.content or None, fragments)

    def parse(self, text: str, token_ids: Sequence[int]) -> ParsedOutput:
        """The split of a whole choice."""
        reasoning, content, calls = self._parser.parse(
            text, self._request, enable_auto_tools=self._auto_tools, model_output_token_ids=token_ids
        )
        found = [
            ToolCallOut(call.id or new_tool_call_id(), call.name, call.arguments) for call in calls or ()
        ]
        if not self._parallel:
            found = found[:1]
        self.called_tools = bool(found)
        if not self._request.include_reasoning:
            reasoning = None
        return ParsedOutput(reasoning, content, found, self._parser.count_reasoning_tokens(token_ids))

    def reasoning_tokens(self, token_ids: Sequence[int]) -> int:
        """How many of a choice's tokens were reasoning."""
        return self._parser.count_reasoning_tokens(token_ids)
