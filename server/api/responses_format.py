"""How a Responses answer is worded: the `Response` object, or its stream of typed events.

Generation runs through the chat path; this turns its output into output items. With tools or a
reasoning parser, each step is read by vLLM's parsers (as for chat), and the items open as their first
piece arrives: reasoning, then the message, then one `function_call` item per call. The stream follows
OpenAI's documented order: `response.created`, `response.in_progress`, per item `output_item.added`,
(`content_part.added`, deltas, `*.done`, `content_part.done`), `output_item.done`, and last
`response.completed` (or `response.incomplete` when cut by `max_output_tokens`) with the usage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from server.answers import Usage
from server.api.parsed_chat_format import with_reasoning
from server.api.respond import GenerationResult
from server.engine.types import GenerationStep, ParsedDelta, ParsedOutput, ToolCallFragment
from server.responses_answers import (
    IncompleteDetails,
    OutputFunctionCall,
    OutputMessage,
    OutputReasoning,
    OutputText,
    ReasoningText,
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseIncompleteEvent,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseReasoningTextDeltaEvent,
    ResponseReasoningTextDoneEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
    ResponseUsage,
    new_id,
)

if TYPE_CHECKING:
    from server.engine.output_parsing import ChoiceReader, RequestParsing

LENGTH_FINISH = "length"


def response_event(event: BaseModel) -> bytes:
    """One event as OpenAI streams it: its type on the `event:` line, the JSON on `data:`."""
    kind = getattr(event, "type", "message")
    return b"event: " + kind.encode() + b"\ndata: " + event.model_dump_json().encode() + b"\n\n"


def finished_response(
    response: Response, items: list[Any], usage: Usage, reasoning_tokens: int | None, cut: bool
) -> Response:
    """`response` finished with `items` and `usage`: completed, or incomplete when cut by the length limit.

    `reasoning_tokens` is None without a reasoning parser (nothing counted).
    """
    if reasoning_tokens is not None:
        usage = with_reasoning(usage, reasoning_tokens)
    return response.model_copy(
        update={
            "status": "incomplete" if cut else "completed",
            "incomplete_details": IncompleteDetails(reason="max_output_tokens") if cut else None,
            "completed_at": None if cut else int(time.time()),
            "output": items,
            "usage": ResponseUsage.from_chat_usage(usage, reasoning_tokens or 0),
        }
    )


def output_items(parsed: ParsedOutput, cut: bool = False) -> list[Any]:
    """A whole generation's output items: reasoning, the message, then the function calls.

    When `cut` by the length limit, the last item is `incomplete`, as the stream closes it.
    """
    items: list[Any] = []
    if parsed.reasoning:
        items.append(
            OutputReasoning(
                id=new_id("rs"), content=[ReasoningText(text=parsed.reasoning)], status="completed"
            )
        )
    if parsed.content or not parsed.tool_calls:
        text = OutputText(text=parsed.content or "")
        items.append(OutputMessage(id=new_id("msg"), status="completed", content=[text]))
    items.extend(
        OutputFunctionCall(
            id=new_id("fc"), call_id=call.id, name=call.name, arguments=call.arguments, status="completed"
        )
        for call in parsed.tool_calls
    )
    if cut:
        items[-1] = items[-1].model_copy(update={"status": "incomplete"})
    return items


class _OpenItem:
    """The item being streamed: its place, its id, what it has said so far."""

    def __init__(self, kind: str, index: int, item_id: str, name: str = "", call_id: str = "") -> None:
        self.kind, self.index, self.id = kind, index, item_id
        self.name, self.call_id = name, call_id
        self.text = ""


class ResponsesFormat:
    """One response's body or event stream (the Responses API serves one choice).

    Built with the response as it starts (`in_progress`, the request's settings), the rendered prompt
    (some parsers read it), how the output is read (None: plain text), and `on_finished`, given the
    finished response (to store it) before its last event or its body goes out.
    """

    def __init__(
        self,
        response: Response,
        prompt_token_ids: Sequence[int],
        parsing: RequestParsing | None,
        on_finished: Callable[[Response], None],
    ) -> None:
        self._response = response
        self._parsing = parsing
        self._reader: ChoiceReader | None = parsing.reader(prompt_token_ids) if parsing is not None else None
        self._on_finished = on_finished
        self._sequence = 0
        self._items: list[Any] = []  # finished items, in order
        self._open: _OpenItem | None = None
        self._token_ids: list[int] = []
        self._cut = False

    def _event(self, event_type: type[BaseModel], **fields: Any) -> bytes:
        event = event_type(sequence_number=self._sequence, **fields)
        self._sequence += 1
        return response_event(event)

    def stream_head(self) -> bytes:
        """`response.created` and `response.in_progress`."""
        return self._event(ResponseCreatedEvent, response=self._response) + self._event(
            ResponseInProgressEvent, response=self._response
        )

    def stream_step(self, prompt_index: int, step: GenerationStep) -> bytes:
        """The events of the step's output, opening and closing items as they begin."""
        out = []
        for delta in step.deltas:
            self._token_ids.extend(delta.token_ids)
            if delta.finish_reason == LENGTH_FINISH:
                self._cut = True
            if self._reader is None:
                parsed = ParsedDelta(content=delta.text or None)
            else:
                parsed = self._reader.feed(
                    delta.text, delta.token_ids, finished=delta.finish_reason is not None
                )
            if parsed is not None:
                out.append(self._pieces(parsed))
        return b"".join(out)

    def _pieces(self, parsed: ParsedDelta) -> bytes:
        out = []
        if parsed.reasoning:
            out.append(self._open_kind("reasoning"))
            out.append(self._text_delta(ResponseReasoningTextDeltaEvent, parsed.reasoning))
        if parsed.content:
            out.append(self._open_kind("message"))
            out.append(self._text_delta(ResponseTextDeltaEvent, parsed.content))
        for fragment in parsed.tool_calls:
            out.append(self._call_piece(fragment))
        return b"".join(out)

    def _text_delta(self, event_type: type[BaseModel], text: str) -> bytes:
        assert self._open is not None
        self._open.text += text
        item = self._open
        return self._event(event_type, item_id=item.id, output_index=item.index, content_index=0, delta=text)

    def _call_piece(self, fragment: ToolCallFragment) -> bytes:
        out = b""
        if fragment.id is not None:  # a new call
            out += self._close()
            item = _OpenItem(
                "function_call", len(self._items), new_id("fc"), fragment.name or "", fragment.id
            )
            self._open = item
            added = OutputFunctionCall(
                id=item.id, call_id=item.call_id, name=item.name, arguments="", status="in_progress"
            )
            out += self._event(ResponseOutputItemAddedEvent, output_index=item.index, item=added)
        if fragment.arguments and self._open is not None and self._open.kind == "function_call":
            self._open.text += fragment.arguments
            out += self._event(
                ResponseFunctionCallArgumentsDeltaEvent,
                item_id=self._open.id,
                output_index=self._open.index,
                delta=fragment.arguments,
            )
        return out

    def _open_kind(self, kind: str) -> bytes:
        if self._open is not None and self._open.kind == kind:
            return b""
        out = self._close()
        item = _OpenItem(kind, len(self._items), new_id("rs" if kind == "reasoning" else "msg"))
        self._open = item
        if kind == "reasoning":
            added: Any = OutputReasoning(id=item.id, status="in_progress")
            part: Any = ReasoningText(text="")
        else:
            added = OutputMessage(id=item.id, status="in_progress")
            part = OutputText(text="")
        out += self._event(ResponseOutputItemAddedEvent, output_index=item.index, item=added)
        out += self._event(
            ResponseContentPartAddedEvent,
            item_id=item.id,
            output_index=item.index,
            content_index=0,
            part=part,
        )
        return out

    def _close(self) -> bytes:
        item, self._open = self._open, None
        if item is None:
            return b""
        status = "incomplete" if self._cut else "completed"
        where = {"output_index": item.index}
        if item.kind == "function_call":
            done: Any = OutputFunctionCall(
                id=item.id, call_id=item.call_id, name=item.name, arguments=item.text, status=status
            )
            out = self._event(
                ResponseFunctionCallArgumentsDoneEvent,
                item_id=item.id,
                name=item.name,
                arguments=item.text,
                **where,
            )
        else:
            if item.kind == "reasoning":
                part: Any = ReasoningText(text=item.text)
                done = OutputReasoning(id=item.id, content=[part], status=status)
                text_done: type[BaseModel] = ResponseReasoningTextDoneEvent
            else:
                part = OutputText(text=item.text)
                done = OutputMessage(id=item.id, status=status, content=[part])
                text_done = ResponseTextDoneEvent
            part_where = {"item_id": item.id, "content_index": 0, **where}
            out = self._event(text_done, text=item.text, **part_where)
            out += self._event(ResponseContentPartDoneEvent, part=part, **part_where)
        self._items.append(done)
        return out + self._event(ResponseOutputItemDoneEvent, item=done, **where)

    def stream_usage(self, usage: Usage) -> bytes:
        """Close the open item, then `response.completed` (or `.incomplete`) with the whole response."""
        out = self._close()
        if not self._items:  # nothing was said: an empty message, as the body has
            out += self._open_kind("message") + self._close()
        reasoning = None
        if self._parsing is not None and self._parsing.counts_reasoning and self._reader is not None:
            reasoning = self._reader.reasoning_tokens(self._token_ids)
        response = finished_response(self._response, self._items, usage, reasoning, self._cut)
        self._on_finished(response)
        last = ResponseIncompleteEvent if self._cut else ResponseCompletedEvent
        return out + self._event(last, response=response)

    def body(self, result: GenerationResult, usage: Usage) -> Response:
        """The finished response, its output read whole."""
        (choice,) = result.choices
        if self._reader is None:
            parsed = ParsedOutput(None, choice.text, [], 0)
        else:
            parsed = self._reader.parse(choice.text, choice.token_ids)
        cut = choice.finish_reason == LENGTH_FINISH
        counts = self._parsing is not None and self._parsing.counts_reasoning
        reasoning = parsed.reasoning_tokens if counts else None
        response = finished_response(self._response, output_items(parsed, cut), usage, reasoning, cut)
        self._on_finished(response)
        return response
