"""An agent of OpenAI's Agents SDK (`openai-agents`) run against the real server through its chat-completions
model: the SDK sends its function tool, the server forces a call, the SDK runs the tool and the run ends.

The embedded model has random weights, so the call is forced (`tool_choice` `required`) and its only
parameters are an enum and a boolean, with free whitespace off on the server: structured outputs make
every call the tool's schema allows close within a few dozen tokens. Generation is greedy.

Two of the session's servers: the structured-output one, without a tool-call parser, where forced calls
are constrained by the tools' JSON schema; and the one with adapters, which reads calls as an agent
deployment runs (`--enable-auto-tool-choice --tool-call-parser hermes`), as a whole agent loop needs, since
the SDK sends the turn after a tool call with `tool_choice` unset, that is `auto`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import jsonschema
import pytest
from agents import (
    Agent,
    FunctionTool,
    MessageOutputItem,
    ModelSettings,
    OpenAIChatCompletionsModel,
    Runner,
    ToolCallItem,
    ToolCallOutputItem,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from tests.e2e.conftest import API_KEY, MODEL, Server

pytestmark = pytest.mark.e2e
QUESTION = "What is the weather in Oslo?"
# One call per turn, greedy, and room for the call (about 70 tokens) or a short answer.
SETTINGS = ModelSettings(tool_choice="required", parallel_tool_calls=False, temperature=0, max_tokens=160)


@pytest.fixture(scope="module")
def agent_servers(structured_server: Server, lora_server: Server) -> dict[str, Server]:
    """`forced`: no tool-call parser; `hermes`: the session's server with `AGENT_FLAGS`."""
    return {"forced": structured_server, "hermes": lora_server}


@pytest.fixture(scope="module", autouse=True)
def no_tracing() -> None:
    # The SDK exports traces to OpenAI by default; these tests reach nothing but the server. Left off after
    # the module: nothing else here uses the SDK.
    set_tracing_disabled(True)


def weather_tool(calls: list[dict[str, Any]]) -> FunctionTool:
    """The agent's tool; each call's arguments are appended to `calls`."""

    @function_tool
    def get_weather(city: Literal["Oslo", "Paris", "Lima"], metric: bool) -> str:
        """The weather in a city.

        Args:
            city: The city.
            metric: Whether to give the temperature in degrees Celsius.
        """
        calls.append({"city": city, "metric": metric})
        return f"Sunny in {city}."

    return get_weather


def agent(client: AsyncOpenAI, tool: FunctionTool, **options: Any) -> Agent:
    return Agent(
        name="forecaster",
        instructions="Answer questions about the weather.",
        tools=[tool],
        model=OpenAIChatCompletionsModel(model=MODEL, openai_client=client),
        model_settings=SETTINGS,
        **options,
    )


def sdk_client(server: Server) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=120)


def check_one_call(calls: list[dict[str, Any]], tool: FunctionTool, items: list[Any]) -> dict[str, Any]:
    """The one call the SDK ran: its arguments valid for the tool's schema, and the same as the model's."""
    assert len(calls) == 1, calls
    (call,) = calls
    jsonschema.validate(call, tool.params_json_schema)
    (requested,) = [item for item in items if isinstance(item, ToolCallItem)]
    assert requested.raw_item.name == "get_weather"
    assert json.loads(requested.raw_item.arguments) == call
    (result,) = [item for item in items if isinstance(item, ToolCallOutputItem)]
    assert result.output == f"Sunny in {call['city']}."
    return call


async def test_an_agent_calls_its_tool_and_stops_on_the_result(agent_servers: dict[str, Server]) -> None:
    calls: list[dict[str, Any]] = []
    tool = weather_tool(calls)
    async with sdk_client(agent_servers["forced"]) as client:
        run = await Runner.run(
            agent(client, tool, tool_use_behavior="stop_on_first_tool"), QUESTION, max_turns=3
        )
    call = check_one_call(calls, tool, run.new_items)
    assert run.final_output == f"Sunny in {call['city']}."
    assert len(run.raw_responses) == 1  # one model turn: the tool's result ended the run


async def test_an_agent_loop_calls_its_tool_then_answers_in_text(agent_servers: dict[str, Server]) -> None:
    calls: list[dict[str, Any]] = []
    tool = weather_tool(calls)
    async with sdk_client(agent_servers["hermes"]) as client:
        # The SDK resets tool_choice after a call (reset_tool_choice), so the second turn may answer.
        run = await Runner.run(agent(client, tool), QUESTION, max_turns=3)
    check_one_call(calls, tool, run.new_items)
    assert len(run.raw_responses) == 2
    assert isinstance(run.new_items[-1], MessageOutputItem)
    assert isinstance(run.final_output, str)
    assert run.final_output
