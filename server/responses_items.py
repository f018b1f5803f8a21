"""The items of a Responses conversation (messages, function calls and outputs, reasoning) as chat messages.

A Responses request's `input` and a stored response's history are lists of items; generation runs
through the chat path, so they become the messages a chat template takes, in vLLM's forms.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, TypeAdapter, model_validator

from server.request_fields import StrictModel

# The item and message-part kinds this server takes; the request refuses others by name.
INPUT_ITEM_TYPES = frozenset({"message", "function_call", "function_call_output", "reasoning"})
MESSAGE_PART_TYPES = frozenset({"input_text", "output_text", "refusal"})
ItemStatus = Literal["in_progress", "completed", "incomplete"]


class InputTextPart(StrictModel):
    """A text part of a message the caller wrote."""

    type: Literal["input_text"]
    text: str


class OutputTextPart(StrictModel):
    """A text part of an assistant message, as a previous response gave it back."""

    type: Literal["output_text"]
    text: str
    # Sent back as the response gave them; the model never sees them.
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] | None = None


class RefusalPart(StrictModel):
    """A refusal part of an assistant message; this server never refuses, other servers' replies may."""

    type: Literal["refusal"]
    refusal: str


MessagePart = Annotated[InputTextPart | OutputTextPart | RefusalPart, Field(discriminator="type")]


class MessageItem(StrictModel):
    """A message: OpenAI's easy form (`role` and `content`), an input message, or an assistant output."""

    type: Literal["message"] | None = None
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[MessagePart]
    # Bookkeeping a stored or replayed item carries; none of it reaches the model.
    id: str | None = None
    status: ItemStatus | None = None
    phase: Literal["commentary", "final_answer"] | None = None

    @model_validator(mode="after")
    def _assistant_parts(self) -> MessageItem:
        parts = self.content if isinstance(self.content, list) else []
        if self.role != "assistant" and any(not isinstance(part, InputTextPart) for part in parts):
            raise ValueError(f"output_text and refusal parts belong to assistant messages, not {self.role}")
        return self

    @property
    def text(self) -> str:
        """The message's text, its parts joined."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.refusal if isinstance(part, RefusalPart) else part.text for part in self.content)


class FunctionCallItem(StrictModel):
    """A call the model made to one of the caller's functions, sent back with its output."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str  # JSON text, checked by the request (its error names the item's place)
    id: str | None = None
    status: ItemStatus | None = None

    @property
    def parsed_arguments(self) -> Any:
        """The arguments as JSON values; an empty string is no arguments, as vLLM reads it.

        Raises:
            json.JSONDecodeError: The arguments are not JSON.
        """
        return json.loads(self.arguments) if self.arguments.strip() else {}


class FunctionCallOutputItem(StrictModel):
    """What the caller's function returned for a call."""

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[InputTextPart]
    id: str | None = None
    status: ItemStatus | None = None

    @property
    def text(self) -> str:
        """The output as text."""
        return self.output if isinstance(self.output, str) else "".join(part.text for part in self.output)


class SummaryTextPart(StrictModel):
    """A part of a reasoning item's summary."""

    type: Literal["summary_text"]
    text: str


class ReasoningTextPart(StrictModel):
    """A part of a reasoning item's reasoning text."""

    type: Literal["reasoning_text"]
    text: str


class ReasoningItem(StrictModel):
    """A reasoning item of an earlier answer, as agent frameworks send them back.

    Accepted so a conversation replays as it was answered; it is not rendered (chat templates drop
    earlier turns' reasoning), so its content never reaches the model.
    """

    type: Literal["reasoning"]
    id: str | None = None
    summary: list[SummaryTextPart] = Field(default_factory=list)
    content: list[ReasoningTextPart] | None = None
    encrypted_content: str | None = None
    status: ItemStatus | None = None


def _item_kind(item: Any) -> str | None:
    if isinstance(item, dict):
        return item.get("type", "message")  # OpenAI's easy messages have no type
    return getattr(item, "type", None) or "message"


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")],
    Discriminator(_item_kind),
]
INPUT_ITEMS: TypeAdapter[list[InputItem]] = TypeAdapter(list[InputItem])


def chat_messages(items: list[InputItem]) -> list[dict[str, Any]]:
    """The items as chat-template messages.

    Consecutive function calls join the assistant turn right before them, or start one with no text;
    each call's arguments are parsed, as vLLM hands them to chat templates. Reasoning items are dropped.

    Args:
        items: The conversation's items, oldest first, their function arguments already checked.

    Returns:
        `{"role", "content"}` dicts, assistant turns with function calls as
        `{"role": "assistant", "content": text or None, "tool_calls": [...]}`, and function outputs as
        `{"role": "tool", "tool_call_id", "content"}`.
    """
    messages: list[dict[str, Any]] = []
    open_turn: dict[str, Any] | None = None  # the assistant turn a function call would join
    for item in items:
        if isinstance(item, ReasoningItem):
            continue
        if isinstance(item, FunctionCallItem):
            if open_turn is None:
                open_turn = {"role": "assistant", "content": None}
                messages.append(open_turn)
            function = {"name": item.name, "arguments": item.parsed_arguments}
            open_turn.setdefault("tool_calls", []).append(
                {"id": item.call_id, "type": "function", "function": function}
            )
            continue
        if isinstance(item, FunctionCallOutputItem):
            message = {"role": "tool", "tool_call_id": item.call_id, "content": item.text}
        else:
            message = {"role": item.role, "content": item.text}
        messages.append(message)
        open_turn = message if message["role"] == "assistant" else None
    return messages
