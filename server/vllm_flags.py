"""Every flag `vllm serve` adds beyond the engine's, classified once: same, accepted, or unsupported.

`vllm serve` users switch by renaming the command, so each of vLLM's front-end flags is one of:

- `same`: wattserve implements it with vLLM's meaning; the parser's flag sets the named settings field.
- `accepted`: parsed as vLLM parses it and ignored, for the reason given; where only some values are
  harmless (`--api-server-count 1`), `only` lists them and any other is refused.
- `unsupported`: refused at startup with one line naming the flag, exit status 2. A boolean's form that
  asks for vLLM's default (`--no-tokens-only`) is what wattserve does anyway, so it passes.

The test suite reads vLLM's parser and fails on a flag this table does not name, and renders the table
into docs/vllm-differences.md, so neither can drift.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, Literal

from server.engine.cli_args import frontend_actions

Kind = Literal["same", "accepted", "unsupported"]
KINDS: tuple[Kind, ...] = ("same", "accepted", "unsupported")
DOC = "docs/vllm-differences.md"


@dataclass(frozen=True)
class VllmFlag:
    """One of vLLM's front-end flags and what wattserve does with it."""

    flag: str
    kind: Kind
    why: str
    field: str | None = None  # same: the settings field the flag sets
    only: tuple[Any, ...] | None = None  # accepted: the values accepted; others are refused
    removed: bool = False  # a spelling older vLLMs took and 0.32 does not: accepted for old configs


def _same(flag: str, field: str | None, why: str) -> VllmFlag:
    return VllmFlag(flag, "same", why, field)


def _accepted(flag: str, why: str, only: tuple[Any, ...] | None = None) -> VllmFlag:
    return VllmFlag(flag, "accepted", why, only=only)


def _unsupported(flag: str, why: str) -> VllmFlag:
    return VllmFlag(flag, "unsupported", why)


ONE_SERVER = "wattserve runs one API server in one process beside its engine"
NOT_SERVED = "wattserve does not serve that endpoint"

VLLM_FLAGS: tuple[VllmFlag, ...] = (
    # The launcher's own flags.
    _unsupported("--headless", f"multi-node data parallel without an API server; {ONE_SERVER}"),
    _accepted(
        "--api-server-count",
        f"{ONE_SERVER}, which holds the energy ledger, admission and adapters: only 1 is accepted",
        only=(1,),
    ),
    _same("--config", None, "a YAML file of flags, read by vLLM's reader; a model need not be named"),
    _unsupported("--grpc", "wattserve serves HTTP only"),
    # The OpenAI layer.
    _same("--lora-modules", "lora_modules", "`name=path` and the JSON object form, loaded at startup"),
    _same("--chat-template", "chat_template", "a file, the template inline, or one of vLLM's bundled names"),
    _accepted(
        "--chat-template-content-format",
        "message content reaches the template as a string, which `auto` picks for text-only chats",
        only=("auto", "string"),
    ),
    _unsupported("--trust-request-chat-template", "requests cannot carry a chat template"),
    _accepted("--trust-request-mm-kwargs", "wattserve takes text only: there are no multimodal kwargs"),
    _same(
        "--default-chat-template-kwargs",
        "default_chat_template_kwargs",
        "passed to every chat template render",
    ),
    _same("--response-role", "response_role", "the role of chat answers"),
    _unsupported("--return-tokens-as-token-ids", "logprob tokens are always given as text"),
    _same(
        "--enable-auto-tool-choice", "enable_auto_tool_choice", "tool_choice auto, through the tool parser"
    ),
    _unsupported(
        "--exclude-tools-when-tool-choice-none", "tools always reach the chat template, as vLLM's default"
    ),
    _same("--tool-call-parser", "tool_call_parser", "vLLM's own parser classes read the model's calls"),
    _same("--tool-parser-plugin", "tool_parser_plugin", "registered with vLLM's ToolParserManager"),
    _same("--tool-strict-level", "tool_strict_level", "passed to vLLM's parser composition"),
    _unsupported("--tool-server", "the Responses API serves function tools only, no built-in tool servers"),
    _accepted("--max-log-len", "wattserve logs no prompt text, so there is nothing to shorten"),
    _same("--enable-prompt-tokens-details", "enable_prompt_tokens_details", "usage.prompt_tokens_details"),
    _unsupported(
        "--enable-per-request-metrics", "answers carry usage.energy; vLLM's per-request timings are not added"
    ),
    _accepted(
        "--enable-server-load-tracking",
        "vLLM counts in-flight requests for its /load route; wattserve always exports them in /metrics "
        "(wattserve_requests_running and its queue gauges)",
    ),
    _same(
        "--enable-force-include-usage",
        "force_include_usage",
        "usage in every chunk of every stream, which ends with a usage chunk",
    ),
    _accepted(
        "--sse-keep-alive-interval",
        "wattserve sends no SSE keep-alive comments: only 0 (off, vLLM's default) is accepted",
        only=(0,),
    ),
    _unsupported("--enable-tokenizer-info-endpoint", f"/tokenizer_info: {NOT_SERVED}"),
    _accepted(
        "--enable-log-outputs",
        "wattserve never logs generated text; vLLM's engine still logs requests under --enable-log-requests",
    ),
    _accepted("--enable-log-deltas", "only matters with --enable-log-outputs"),
    _accepted("--cohere-is-reasoning-model", f"for vLLM's Cohere route; {NOT_SERVED}"),
    _accepted("--cohere-format", f"for vLLM's Cohere route; {NOT_SERVED}"),
    _accepted("--anthropic-disabled-thinking-effort", f"for vLLM's Anthropic route; {NOT_SERVED}"),
    _accepted("--log-error-stack", "errors wattserve does not expect are always logged with their stack"),
    _unsupported("--tokens-only", "wattserve serves the OpenAI API, not vLLM's tokens-in/tokens-out one"),
    _unsupported("--enable-scale-out", f"vLLM's scale-out routes: {NOT_SERVED}"),
    _same("--fingerprint-mode", "fingerprint_mode", "what answers report as system_fingerprint"),
    _same("--fingerprint-value", "fingerprint_value", "the system_fingerprint of the custom mode"),
    # The HTTP server.
    _same("--host", "host", "the address to listen on (wattserve's default: 127.0.0.1)"),
    _same("--port", "port", "the port to listen on"),
    _unsupported("--grpc-port", "wattserve serves HTTP only"),
    _accepted(
        "--data-parallel-supervisor-port",
        f"for the supervisor of vLLM's multi-port data-parallel launcher; {ONE_SERVER}",
    ),
    _accepted("--dp-supervisor-probe-interval-s", "as --data-parallel-supervisor-port"),
    _accepted("--dp-supervisor-probe-timeout-s", "as --data-parallel-supervisor-port"),
    _accepted("--dp-supervisor-probe-failure-threshold", "as --data-parallel-supervisor-port"),
    _same("--uds", "uds", "listen on a Unix domain socket instead of --host and --port"),
    _same("--uvicorn-log-level", "log_level", "the log level, `trace` included"),
    _same("--disable-uvicorn-access-log", "disable_uvicorn_access_log", "no access log line per request"),
    _accepted(
        "--disable-access-log-for-endpoints",
        "access lines are still written for those paths; --disable-uvicorn-access-log turns them all off",
    ),
    _same("--allow-credentials", "allow_credentials", "CORS"),
    _same("--allowed-origins", "allowed_origins", "CORS, a JSON list; none by default, as in vLLM"),
    _same("--allowed-methods", "allowed_methods", "CORS, a JSON list"),
    _same("--allowed-headers", "allowed_headers", "CORS, a JSON list"),
    _same("--api-key", "api_key", "one or more keys, any of them accepted on /v1 (several: rotation)"),
    _same("--ssl-keyfile", "ssl_keyfile", "TLS"),
    _same("--ssl-certfile", "ssl_certfile", "TLS"),
    _same("--ssl-ca-certs", "ssl_ca_certs", "TLS"),
    _unsupported("--enable-ssl-refresh", "restart the server to take new certificate files"),
    _same("--ssl-cert-reqs", "ssl_cert_reqs", "TLS client certificates"),
    _same("--ssl-ciphers", "ssl_ciphers", "TLS cipher suites (TLS 1.2 and below)"),
    _same("--root-path", "root_path", "the prefix behind a path-routing proxy"),
    _same("--middleware", "middleware", "ASGI middleware by import path: a class, or a function for HTTP"),
    _same("--enable-request-id-headers", "enable_request_id_headers", "answers carry X-Request-Id"),
    _same("--disable-fastapi-docs", "disable_fastapi_docs", "no /docs, /redoc or /openapi.json"),
    _same(
        "--h11-max-incomplete-event-size",
        "h11_max_incomplete_event_size",
        "the request head's size bound (431 past it); wattserve's default is 64 KiB, vLLM's 4 MiB",
    ),
    _same("--h11-max-header-count", "h11_max_header_count", "the request's header count bound (431 past it)"),
    _unsupported("--enable-offline-docs", "the /docs page loads its assets as FastAPI's default does"),
    _accepted("--enable-flash-late-interaction", f"for late-interaction scoring; {NOT_SERVED}"),
    # Spellings vLLM 0.32 no longer takes, which older deployments carry.
    VllmFlag(
        "--disable-log-requests",
        "accepted",
        "older vLLMs' spelling (removed in 0.32): requests are not logged unless --enable-log-requests",
        removed=True,
    ),
)
BY_FLAG = {entry.flag: entry for entry in VLLM_FLAGS}
UNCLASSIFIED = "a vLLM flag wattserve has not classified yet"


def _copy(parser: argparse.ArgumentParser, action: argparse.Action, dest: str, help_text: str) -> None:
    """Add vLLM's flag as vLLM defines it (spellings, value count, type, choices) under our own `dest`."""
    common: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": help_text}
    if isinstance(action, argparse.BooleanOptionalAction):
        spellings = [spelling for spelling in action.option_strings if not spelling.startswith("--no-")]
        parser.add_argument(*spellings, action=argparse.BooleanOptionalAction, **common)
    elif isinstance(action, argparse._StoreTrueAction):  # noqa: SLF001 - argparse names no public type
        parser.add_argument(*action.option_strings, action="store_true", **common)
    elif isinstance(action, argparse._AppendAction):  # noqa: SLF001
        parser.add_argument(*action.option_strings, action="append", type=action.type, **common)
    else:
        metavar = None if action.choices else action.metavar or action.dest.upper()
        parser.add_argument(
            *action.option_strings,
            nargs=action.nargs,
            type=action.type,
            choices=action.choices,
            metavar=metavar,
            **common,
        )


def _harmless(action: argparse.Action) -> tuple[Any, ...]:
    # A boolean set to vLLM's default asks for nothing wattserve does not do.
    if isinstance(action, argparse.BooleanOptionalAction | argparse._StoreTrueAction):  # noqa: SLF001
        return (action.default,)
    return ()


@dataclass(frozen=True)
class _Added:
    entry: VllmFlag
    dest: str
    harmless: tuple[Any, ...]


def add_vllm_flags(parser: argparse.ArgumentParser) -> list[_Added]:
    """Add every vLLM front-end flag the parser lacks (the accepted and unsupported ones).

    Returns what `check_vllm_flags` needs to refuse them after parsing.
    """
    group = parser.add_argument_group("vLLM's other flags", f"Accepted or refused as {DOC} says.")
    added = []
    removed = [entry for entry in VLLM_FLAGS if entry.removed]
    for action in frontend_actions():
        if any(spelling in parser._option_string_actions for spelling in action.option_strings):  # noqa: SLF001
            continue  # one of ours, with vLLM's meaning
        entry = _find(action) or _unsupported(action.option_strings[0], UNCLASSIFIED)
        dest = f"vllm_{action.dest}"
        label = "accepted, ignored" if entry.kind == "accepted" else "not supported"
        _copy(group, action, dest, f"vLLM's flag, {label}: {entry.why}.")
        added.append(_Added(entry, dest, _harmless(action)))
    for entry in removed:
        if entry.flag in parser._option_string_actions:  # noqa: SLF001 - vLLM took it back
            continue
        dest = f"vllm_{entry.flag.removeprefix('--').replace('-', '_')}"
        group.add_argument(
            entry.flag, dest=dest, action="store_true", default=argparse.SUPPRESS, help=f"{entry.why}."
        )
    return added


def _find(action: argparse.Action) -> VllmFlag | None:
    return next((BY_FLAG[s] for s in action.option_strings if s in BY_FLAG), None)


def refusal(entry: VllmFlag, value: Any = None) -> str:
    """The one line that refuses a flag."""
    shown = f" {value}" if entry.only is not None else ""
    return f"wattserve: error: wattserve does not support vLLM's {entry.flag}{shown}: {entry.why} (see {DOC})"


def check_vllm_flags(args: argparse.Namespace, added: list[_Added]) -> None:
    """Exit with status 2 and one line if a refused flag, or a refused value of an accepted one, was given."""
    for item in added:
        if not hasattr(args, item.dest):
            continue
        value = getattr(args, item.dest)
        if item.entry.kind == "unsupported" and value not in item.harmless:
            _refuse(refusal(item.entry))
        if item.entry.only is not None and value not in item.entry.only:
            _refuse(refusal(item.entry, value))


def _refuse(line: str) -> None:
    sys.stderr.write(line + "\n")
    raise SystemExit(2)


def markdown_table() -> str:
    """The table for docs/vllm-differences.md, rendered from `VLLM_FLAGS`."""
    rows = ["| Flag | wattserve | Why |", "|---|---|---|"]
    for entry in VLLM_FLAGS:
        kind = f"accepted: {', '.join(map(str, entry.only))} only" if entry.only else entry.kind
        flag = f"`{entry.flag}`" + (" (before 0.32)" if entry.removed else "")
        rows.append(f"| {flag} | {kind} | {entry.why.replace('|', '/')} |")
    counts = {kind: sum(entry.kind == kind for entry in VLLM_FLAGS) for kind in KINDS}
    summary = ", ".join(f"{count} {kind}" for kind, count in counts.items())
    return "\n".join([*rows, "", f"{len(VLLM_FLAGS)} flags: {summary}."]) + "\n"


TABLE_START, TABLE_END = (
    "<!-- flag table: generated by `python -m server.vllm_flags` -->",
    "<!-- end of table -->",
)


def render_doc(page: str) -> str:
    """The page with its flag table replaced by the one `VLLM_FLAGS` gives."""
    head, _, rest = page.partition(TABLE_START)
    _, _, tail = rest.partition(TABLE_END)
    return f"{head}{TABLE_START}\n{markdown_table()}{TABLE_END}{tail}"


if __name__ == "__main__":  # rewrite the page's table after a change to VLLM_FLAGS
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / DOC
    path.write_text(render_doc(path.read_text()))
