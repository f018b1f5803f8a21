"""Request building blocks: the strict base model, structured-output formats, vLLM's extensions, `metadata`.

`vllm serve` accepts these; clients written for it send them. Each keeps vLLM's meaning; where the served
model or this server cannot honour one, the request is refused with a coded 400 naming the field, never
silently served differently.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

# Validation errors that carry their own `code` and `param` (in the error's context), answered as such.
UNSUPPORTED_CONTENT_PART = "unsupported_content_part"
RESERVED_TEMPLATE_KWARG = "reserved_chat_template_kwarg"
INVALID_TOOL_CALL_ARGUMENTS = "invalid_tool_call_arguments"
INVALID_TOOL_CHOICE = "invalid_tool_choice"
CODED_ERRORS = frozenset(
    {UNSUPPORTED_CONTENT_PART, RESERVED_TEMPLATE_KWARG, INVALID_TOOL_CALL_ARGUMENTS, INVALID_TOOL_CHOICE}
)

# `chat_template_kwargs` keys that would override what the server itself sets when it renders a chat:
# the template, the rendered conversation, and the open assistant turn the answer continues. vLLM refuses
# `chat_template` and `tokenize` (`vllm/renderers/hf.py`, `resolve_chat_template_kwargs`); `conversation`
# there would collide with its own argument, and the rest would change the prompt the server builds.
RESERVED_TEMPLATE_KWARGS = frozenset(
    {
        "add_generation_prompt",
        "continue_final_message",
        "chat_template",
        "conversation",
        "tokenize",
        "return_dict",
    }
)
# OpenAI's documented `metadata` bounds.
METADATA_PAIRS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512


class StrictModel(BaseModel):
    """A request model that refuses unknown fields and, as OpenAI does, values of the wrong JSON type.

    Strict mode: `"stream": "yes"` or `"max_tokens": "16"` are errors, not coerced (a number is still
    accepted where a float is expected).
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class JsonSchemaSpec(StrictModel):
    """The `json_schema` member of `response_format`."""

    name: str = Field(max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(StrictModel):
    """`response_format`: free text, any JSON object, or JSON matching a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_when_needed(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format.json_schema is required when type is 'json_schema'")
        return self


class StructuredOutputs(StrictModel):
    """The `structured_outputs` of vLLM's requests: one constraint, with vLLM's options.

    The constraint is a JSON schema, a regex, a choice of strings, an EBNF grammar or any JSON object; the
    options are vLLM's whitespace and property ones (`vllm.sampling_params.StructuredOutputsParams`).
    """

    json_: dict[str, Any] | str | None = Field(default=None, alias="json")
    regex: str | None = Field(default=None, min_length=1)
    choice: list[Annotated[str, Field(min_length=1)]] | None = Field(default=None, min_length=1)
    grammar: str | None = Field(default=None, min_length=1)
    json_object: bool | None = None
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None

    @model_validator(mode="after")
    def _one_constraint(self) -> StructuredOutputs:
        kinds = [self.json_, self.regex, self.choice, self.grammar, self.json_object]
        if sum(kind is not None for kind in kinds) != 1:
            raise ValueError("give exactly one of json, regex, choice, grammar or json_object")
        if self.json_object is False:
            raise ValueError("json_object, when given, must be true")
        if self.regex is not None and "\x00" in self.regex:
            # vLLM refuses it with a bare ValueError its engine client does not classify as the caller's.
            raise ValueError("regex must not contain a NUL character")
        return self

    @property
    def options(self) -> dict[str, Any]:
        """The options beside the constraint, as vLLM's `StructuredOutputsParams` takes them."""
        options: dict[str, Any] = {}
        if self.disable_any_whitespace:
            options["disable_any_whitespace"] = True
        if self.disable_additional_properties:
            options["disable_additional_properties"] = True
        if self.whitespace_pattern is not None:
            options["whitespace_pattern"] = self.whitespace_pattern
        return options


def _check_metadata(metadata: dict[str, str]) -> dict[str, str]:
    if len(metadata) > METADATA_PAIRS:
        raise ValueError(f"holds {len(metadata)} pairs; at most {METADATA_PAIRS} are allowed")
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_CHARS:
            raise ValueError(f"key {key[:METADATA_KEY_CHARS]!r}... is over {METADATA_KEY_CHARS} characters")
        if len(value) > METADATA_VALUE_CHARS:
            raise ValueError(f"the value of {key!r} is over {METADATA_VALUE_CHARS} characters")
    return metadata


# OpenAI's `metadata`: string pairs for the caller's own bookkeeping; the model never sees them.
Metadata = Annotated[dict[str, str], AfterValidator(_check_metadata)]


def _check_template_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    reserved = sorted(RESERVED_TEMPLATE_KWARGS & kwargs.keys())
    if reserved:
        raise PydanticCustomError(
            RESERVED_TEMPLATE_KWARG,
            "{param}: the server sets this when it renders the chat; a request cannot override it",
            {"param": f"chat_template_kwargs.{reserved[0]}"},
        )
    return kwargs


# vLLM's `chat_template_kwargs`: extra variables for the chat template (e.g. `enable_thinking`).
TemplateKwargs = Annotated[dict[str, Any], AfterValidator(_check_template_kwargs)]


# Content parts a chat message may hold: text, and images for a model that takes them (checked once the
# model is known, in serving.prepare).
CONTENT_PARTS = frozenset({"text", "image_url"})


def refuse_non_text_parts(data: Any) -> None:
    """Refuse a chat whose message content holds a part other than text or an image, naming the part.

    No served model takes audio, video or files here; such a part dropped or flattened into text would
    give an answer to a different question. Runs on the raw body, before the parts are validated, so the
    error names the part's type rather than a mismatch with another part's shape.

    Raises:
        PydanticCustomError: `unsupported_content_part`, its `param` `messages.N.content.M`.
    """
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list):
        return
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for position, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(kind, str) and kind not in CONTENT_PARTS:
                raise PydanticCustomError(
                    UNSUPPORTED_CONTENT_PART,
                    "{param}: '{kind}' content parts are not supported: the served model takes text and, "
                    "where it is multimodal, images",
                    {"param": f"messages.{index}.content.{position}", "kind": kind},
                )


# OpenAI's function names: what a model can write back in a call and a client can dispatch on.
FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


class FunctionDefinition(StrictModel):
    """A function the model may call: its name, what it does, and its arguments' JSON schema."""

    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatTool(StrictModel):
    """One entry of chat's `tools` (only functions exist in the chat API)."""

    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(StrictModel):
    """The function a named `tool_choice` forces."""

    name: str = Field(min_length=1)


class NamedToolChoice(StrictModel):
    """`tool_choice` naming one function: the model must call it."""

    type: Literal["function"]
    function: FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


def _check_arguments(arguments: str) -> str:
    try:
        json.loads(arguments)
    except (ValueError, RecursionError) as err:
        raise PydanticCustomError(
            INVALID_TOOL_CALL_ARGUMENTS,
            "the arguments of an earlier tool call must be JSON text, as the model wrote them: {error}",
            {"error": str(err)},
        ) from err
    return arguments


class CalledFunction(StrictModel):
    """The function of a tool call in the history: its name and its arguments as JSON text."""

    name: str = Field(min_length=1)
    arguments: Annotated[str, AfterValidator(_check_arguments)]


class HistoryToolCall(StrictModel):
    """A tool call an earlier assistant turn made, sent back in `messages`."""

    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: CalledFunction


def check_tool_choice(tools: list[ChatTool] | None, choice: ToolChoice | None) -> None:
    """Check `tool_choice` against `tools`, as OpenAI and vLLM do.

    Raises:
        PydanticCustomError: `invalid_tool_choice`, naming `tool_choice`: a choice other than `none`
            without tools, or one naming a function not in `tools`.
    """
    if choice is None or choice == "none":
        return
    if not tools:
        raise PydanticCustomError(
            INVALID_TOOL_CHOICE,
            "tool_choice: needs tools: give the functions the model may call in `tools`",
            {"param": "tool_choice"},
        )
    if isinstance(choice, NamedToolChoice):
        names = {tool.function.name for tool in tools}
        if choice.function.name not in names:
            raise PydanticCustomError(
                INVALID_TOOL_CHOICE,
                "tool_choice: names the function '{name}', which is not in tools ({names})",
                {"param": "tool_choice", "name": choice.function.name, "names": ", ".join(sorted(names))},
            )
