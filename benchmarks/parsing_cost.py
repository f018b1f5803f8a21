"""What reading output through vLLM's tool and reasoning parsers costs the API process per streamed token.

Words a scripted output a token at a time (the embedded model's tokenizer) into chat chunks, as the
server streams them: once on the plain path (no tools, no reasoning parser), and once through each
parser case. Prints CPU microseconds per token for each, and what parsing adds over plain. Runs in
process, no server or engine, so the figures are the wording alone.

    python -m benchmarks.parsing_cost [--tokens 4000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from server.api.chat_format import ChatFormat
from server.api.parsed_chat_format import ParsedChatFormat
from server.api.state import AnswerOptions
from server.default_model import build_tokenizer
from server.engine.output_parsing import OutputParsers, ParserOptions
from server.engine.types import ChoiceDelta, GenerationStep
from server.protocol import ChatCompletionRequest
from server.serving.tools import output_parsing

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
PROSE = "The weather in Oslo is mild today, with light wind from the west and a little rain. "
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
# name: (parser flags, request fields, the output said)
CASES: dict[str, tuple[ParserOptions, dict[str, Any], str]] = {
    "plain": (ParserOptions(), {}, PROSE),
    "auto tools (hermes), prose": (
        ParserOptions(tool_call_parser="hermes", enable_auto_tool_choice=True),
        {"tools": [WEATHER]},
        PROSE,
    ),
    "auto tools (hermes), prose then calls": (
        ParserOptions(tool_call_parser="hermes", enable_auto_tool_choice=True),
        {"tools": [WEATHER]},
        PROSE + CALL,
    ),
    "required call (structured outputs)": (
        ParserOptions(),
        {"tools": [WEATHER], "tool_choice": "required"},
        "",
    ),
    "reasoning (deepseek_r1)": (ParserOptions(reasoning_parser="deepseek_r1"), {}, "<think>" + PROSE),
}
REQUIRED_CALL = '{"name": "get_weather", "parameters": {"city": "Oslo"}}'


def _output(case: str, said: str, tokens: int) -> str:
    if case.startswith("required"):
        calls = [REQUIRED_CALL] * max(1, tokens // 16)
        return "[" + ", ".join(calls) + "]"
    text = said
    while len(text) < tokens * 4:
        text += PROSE
    return text + ("</think>Done." if case.startswith("reasoning") else "")


def _steps(tokenizer: Any, text: str, tokens: int) -> list[GenerationStep]:
    ids = tokenizer.encode(text)[:tokens]
    steps, said = [], ""
    for position, token_id in enumerate(ids):
        whole = tokenizer.decode(ids[: position + 1])
        piece, said = whole[len(said) :], whole
        last = position == len(ids) - 1
        delta = ChoiceDelta(0, piece, 1, None, "stop" if last else None, token_ids=[token_id])
        steps.append(GenerationStep(0, [delta], last, 1))
    return steps


def _round(tokenizer: Any, case: str, steps: list[GenerationStep]) -> float:
    options, fields, _ = CASES[case]
    body = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "?"}], **fields}
    )
    parsing = output_parsing(body, OutputParsers(tokenizer, "m", options))
    if parsing is None:
        wording: ChatFormat = ChatFormat(body, "chatcmpl-1", 8, AnswerOptions(), None)
    else:
        wording = ParsedChatFormat(body, "chatcmpl-1", [1] * 8, AnswerOptions(), None, parsing)
    start = time.process_time()
    for step in steps:
        wording.stream_step(0, step)
    return (time.process_time() - start) / len(steps) * 1e6


def main(argv: list[str] | None = None) -> int:
    """Measure and print CPU microseconds per streamed token for each case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    tokenizer = build_tokenizer()
    medians = {}
    for case, (_, _, said) in CASES.items():
        steps = _steps(tokenizer, _output(case, said, args.tokens), args.tokens)
        medians[case] = statistics.median(_round(tokenizer, case, steps) for _ in range(args.rounds))
    plain = medians["plain"]
    print(f"{'case':<40} {'µs CPU/token':>13} {'added':>9}")  # noqa: T201 - the report
    for case, micros in medians.items():
        print(f"{case:<40} {micros:>13.1f} {micros - plain:>+9.1f}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
