"""Flags for agents: tool calling as `vllm serve` spells it, and the Responses API's store."""

from __future__ import annotations

import argparse

from server.cli_flags.flag import Flag

AGENT_FLAGS: list[Flag] = [
    Flag(
        "--enable-auto-tool-choice",
        "enable_auto_tool_choice",
        "Let the model call tools of its own choice (tool_choice auto); needs --tool-call-parser.",
        {"action": argparse.BooleanOptionalAction},
    ),
    Flag(
        "--tool-call-parser",
        "tool_call_parser",
        "vLLM's tool parser for the model's call format (hermes, llama3_json, mistral, ...): reads calls out "
        "of the model's text under tool_choice auto.",
    ),
    Flag(
        "--tool-parser-plugin",
        "tool_parser_plugin",
        "A Python file registering a tool parser with vLLM's ToolParserManager, for --tool-call-parser.",
    ),
    Flag(
        "--tool-strict-level",
        "tool_strict_level",
        "vLLM's floor for tool-call structural tags (auto, function, parameter).",
        {"choices": ["auto", "function", "parameter"]},
    ),
    Flag("--max-tools", "max_tools", "Requests with more tools get 400.", {"type": int}),
    Flag(
        "--responses-store",
        "responses_store",
        "The SQLite file stored Responses live in (default: responses.sqlite3 under --cache-dir).",
    ),
    Flag(
        "--responses-store-max-count",
        "responses_store_max_count",
        "Stored responses kept at most; the oldest go first.",
        {"type": int},
    ),
    Flag(
        "--responses-store-max-bytes",
        "responses_store_max_bytes",
        "Bytes of stored responses kept at most; the oldest go first.",
        {"type": int},
    ),
    Flag(
        "--responses-store-ttl",
        "responses_store_ttl_seconds",
        "Seconds a stored response is kept (OpenAI keeps them 30 days).",
        {"type": float},
    ),
]
