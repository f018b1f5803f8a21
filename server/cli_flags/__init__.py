"""wattserve's own `serve` flags, by group: each names the settings field it sets and says what it does.

The parser (`server.cli`) adds them beside vLLM's engine flags and shows each field's real default.
"""

from __future__ import annotations

import argparse
import json

from server.cli_flags.agents import AGENT_FLAGS
from server.cli_flags.batch import BATCH_FLAGS
from server.cli_flags.energy import ENERGY_FLAGS
from server.cli_flags.flag import Flag
from server.cli_values import json_list, json_object, lora_module

SERVER_FLAGS: list[Flag] = [
    Flag("--host", "host", "Address to listen on."),
    Flag("--port", "port", "Port to listen on.", {"type": int}),
    Flag(
        "--api-key",
        "api_key",
        "Require a bearer key on /v1 routes and the API docs; give several to rotate (any is accepted).",
        {"nargs": "+"},
    ),
    Flag("--admin-key", "admin_key", "Require this key (and not --api-key) to manage adapters."),
    Flag("--cache-dir", "cache_dir", "Where the embedded default model is built."),
    Flag(
        "--uvicorn-log-level",
        "log_level",
        "Log level.",
        {"choices": ["critical", "error", "warning", "info", "debug", "trace"]},
    ),
    Flag(
        "--disable-fastapi-docs",
        "disable_fastapi_docs",
        "Serve no /docs, /redoc or /openapi.json.",
        {"action": argparse.BooleanOptionalAction},
    ),
    Flag(
        "--shutdown-grace-seconds",
        "shutdown_grace_seconds",
        "On SIGTERM, how long in-flight requests may finish before streams are cut.",
        {"type": float},
    ),
    Flag(
        "--disable-uvicorn-access-log",
        "disable_uvicorn_access_log",
        "Log no line per HTTP request.",
        {"action": argparse.BooleanOptionalAction},
    ),
    Flag("--uds", "uds", "Listen on this Unix domain socket instead of --host and --port."),
    Flag("--root-path", "root_path", "Path prefix the app is served under behind a path-routing proxy."),
    Flag("--ssl-keyfile", "ssl_keyfile", "TLS private key file (serve HTTPS with --ssl-certfile)."),
    Flag("--ssl-certfile", "ssl_certfile", "TLS certificate file."),
    Flag("--ssl-ca-certs", "ssl_ca_certs", "CA certificates for verifying client certificates."),
    Flag("--ssl-ciphers", "ssl_ciphers", "TLS cipher suites, as OpenSSL names them (TLS 1.2 and below)."),
    Flag(
        "--ssl-cert-reqs",
        "ssl_cert_reqs",
        "Client certificates: 0 none, 1 optional, 2 required (Python's ssl.CERT_*).",
        {"type": int, "choices": [0, 1, 2]},
    ),
    Flag(
        "--allowed-origins",
        "allowed_origins",
        "CORS: origins allowed, as a JSON list (e.g. '[\"https://app.example\"]'); none by default.",
        {"type": json_list},
    ),
    Flag(
        "--allowed-methods", "allowed_methods", "CORS: methods allowed, as a JSON list.", {"type": json.loads}
    ),
    Flag(
        "--allowed-headers", "allowed_headers", "CORS: headers allowed, as a JSON list.", {"type": json.loads}
    ),
    Flag(
        "--allow-credentials",
        "allow_credentials",
        "CORS: allow credentials.",
        {"action": argparse.BooleanOptionalAction},
    ),
    Flag(
        "--middleware",
        "middleware",
        "ASGI middleware by import path (repeatable): a class is added as middleware, a function as "
        "HTTP middleware, as vLLM does.",
        {"action": "append"},
    ),
    Flag(
        "--enable-request-id-headers",
        "enable_request_id_headers",
        "Answer with an X-Request-Id header: the request's own, else a new one.",
        {"action": argparse.BooleanOptionalAction},
    ),
    Flag(
        "--keep-alive-on-engine-death",
        "keep_alive_on_engine_death",
        "Keep serving 503s after the engine dies instead of exiting non-zero.",
        {"action": "store_true"},
    ),
]
OPENAI_FLAGS: list[Flag] = [
    Flag(
        "--chat-template",
        "chat_template",
        "Chat template: a Jinja file, or the template itself (default: the tokenizer's own).",
    ),
    Flag(
        "--enable-prompt-tokens-details",
        "enable_prompt_tokens_details",
        "Report usage.prompt_tokens_details.cached_tokens (prompt tokens the prefix cache served).",
        {"action": argparse.BooleanOptionalAction},
    ),
    Flag(
        "--enable-force-include-usage",
        "force_include_usage",
        "End every stream with a usage chunk and put usage in every chunk, whatever stream_options say.",
        {"action": argparse.BooleanOptionalAction},
    ),
    Flag(
        "--default-chat-template-kwargs",
        "default_chat_template_kwargs",
        'Keyword arguments for every chat template render, as a JSON object (e.g. \'{"enable_thinking": '
        "false}').",
        {"type": json_object},
    ),
    Flag("--response-role", "response_role", "The role chat answers carry."),
    Flag(
        "--fingerprint-mode",
        "fingerprint_mode",
        "What answers report as system_fingerprint, as vLLM builds it: full (vLLM's version, parallelism "
        "and config hash), hash, custom (--fingerprint-value) or none.",
        {"choices": ["full", "hash", "custom", "none"]},
    ),
    Flag("--fingerprint-value", "fingerprint_value", "The system_fingerprint of --fingerprint-mode custom."),
]
ADAPTER_FLAGS: list[Flag] = [
    Flag(
        "--adapter-root",
        "adapter_roots",
        "Directory adapters may be loaded from (repeatable).",
        {"action": "append"},
    ),
    Flag("--adapter-dir", "adapter_dir", "Load every adapter folder here at startup."),
    Flag(
        "--lora-modules",
        "lora_modules",
        "Adapters to load at startup, as name=path or a JSON object with name, path and optionally "
        "base_model_name (vLLM's forms).",
        {"nargs": "+", "action": "extend", "type": lora_module},
    ),
    Flag(
        "--allow-missing-adapters",
        "allow_missing_adapters",
        "Start even if an adapter named by --lora-modules or found in --adapter-dir fails to load "
        "(it is logged); by default startup stops, so a replica never reports healthy without its adapters.",
        {"action": "store_true"},
    ),
    Flag(
        "--watch-adapters",
        "watch_adapters",
        "Follow --adapter-dir: load and unload on changes.",
        {"action": "store_true"},
    ),
    Flag(
        "--load-adapters-on-request",
        "load_adapters_on_request",
        "A request whose model names a folder of --adapter-dir not loaded yet loads it first.",
        {"action": argparse.BooleanOptionalAction},
    ),
]
ADMISSION_FLAGS: list[Flag] = [
    Flag(
        "--max-concurrent-requests",
        "max_concurrent_requests",
        "Requests in the engine at once (unset: twice --max-num-seqs).",
        {"type": int},
    ),
    Flag(
        "--max-queued-requests",
        "max_queued_requests",
        "Requests waiting for a slot before 429 (unset: twice --max-num-seqs).",
        {"type": int},
    ),
    Flag(
        "--max-request-body-bytes", "max_request_body_bytes", "Larger request bodies get 413.", {"type": int}
    ),
    Flag(
        "--h11-max-incomplete-event-size",
        "h11_max_incomplete_event_size",
        "Bytes a request head (request line and headers) may reach; larger gets 431.",
        {"type": int},
    ),
    Flag(
        "--h11-max-header-count",
        "h11_max_header_count",
        "Headers a request may carry; more gets 431.",
        {"type": int},
    ),
    Flag(
        "--write-timeout-seconds",
        "write_timeout_seconds",
        "Close a connection whose client reads none of its response for this long (0: never).",
        {"type": float},
    ),
    Flag(
        "--scrape-min-interval-ms",
        "scrape_min_interval_ms",
        "Render /metrics and /v1/energy at most once per this many ms, off the event loop.",
        {"type": int},
    ),
    Flag(
        "--max-prompt-chars",
        "max_prompt_chars",
        "Requests whose prompts (or chat messages, every field) hold more characters in all get 400 "
        "before rendering (unset: 32 x --max-model-len).",
        {"type": int},
    ),
    Flag(
        "--max-chat-messages",
        "max_chat_messages",
        "Chats with more messages get 400 before rendering.",
        {"type": int},
    ),
    Flag(
        "--max-response-tokens",
        "max_response_tokens",
        "Requests asking for more, n x max_tokens x (1 + top_logprobs) over all prompts, get 400 "
        "(unset: 131072 or --max-model-len, whichever is larger).",
        {"type": int},
    ),
    Flag(
        "--max-schema-bytes",
        "max_schema_bytes",
        "A response_format JSON schema of more bytes, serialized, gets 400 (code response_format_too_large).",
        {"type": int},
    ),
    Flag(
        "--max-schema-enum-values",
        "max_schema_enum_values",
        "A response_format schema with more enum values in all (a const counts as one) gets 400.",
        {"type": int},
    ),
    Flag(
        "--max-schema-properties",
        "max_schema_properties",
        "A response_format schema with more object properties in all gets 400.",
        {"type": int},
    ),
    Flag(
        "--max-grammar-compile-seconds",
        "max_grammar_compile_seconds",
        "A new response_format schema is compiled once, in a separate process, before the engine gets it; "
        "one that takes longer gets 400 (code response_format_too_complex), and one whose clients all "
        "left is stopped. 0: no such compile, the engine compiles unbounded.",
        {"type": float},
    ),
    Flag(
        "--grammar-compile-workers",
        "grammar_compile_workers",
        "Those compiles run at once at most (one process and one core each); others wait.",
        {"type": int},
    ),
]
TIER_FLAGS: list[Flag] = [
    Flag(
        "--flex-max-wait-seconds",
        "flex_max_wait_seconds",
        "Longest a flex request waits in the flex lane before it is admitted anyway.",
        {"type": float},
    ),
    Flag(
        "--flex-max-queued",
        "flex_max_queued",
        "Flex requests the lane holds before 429 (unset: four times --max-num-seqs).",
        {"type": int},
    ),
    Flag(
        "--flex-batch-size",
        "flex_batch_size",
        "Flex requests that start a batch of their own on an idle engine (unset: half --max-num-seqs).",
        {"type": int},
    ),
    Flag(
        "--flex-riders-per-step",
        "flex_riders_per_step",
        "Flex requests that may join a running batch per engine step (unset: 1 per 32 of --max-num-seqs).",
        {"type": int},
    ),
    Flag(
        "--engine-spin-seconds",
        "engine_spin_seconds",
        "Seconds vLLM's processes busy-wait for the next step before they sleep (unset: vLLM's 1 s; "
        "0.02 under --energy-policy slo).",
        {"type": float},
    ),
    Flag(
        "--energy-policy",
        "energy_policy",
        "slo: batch more while the latency SLOs below have slack.",
        {"choices": ["off", "slo"]},
    ),
    Flag(
        "--slo-ttft-p90",
        "slo_ttft_p90",
        "The governor's p90 time-to-first-token target, seconds.",
        {"type": float},
    ),
    Flag(
        "--slo-itl-p90",
        "slo_itl_p90",
        "The governor's p90 inter-token-latency target, seconds.",
        {"type": float},
    ),
    Flag(
        "--grid-intensity-source",
        "grid_intensity_source",
        "Grid gCO2e/kWh over time: a file (CSV or JSON) or an Electricity Maps or WattTime URL.",
    ),
    Flag(
        "--grid-intensity-refresh-seconds",
        "grid_intensity_refresh_seconds",
        "How often the grid-intensity source is read again.",
        {"type": float},
    ),
    Flag(
        "--grid-intensity-header",
        "grid_intensity_headers",
        "An HTTP header for the source, as 'Name: value' (repeatable; e.g. 'auth-token: ...').",
        {"action": "append"},
    ),
    Flag(
        "--flex-max-intensity",
        "flex_max_intensity",
        "Hold flex work while the grid is dirtier than this many gCO2e/kWh (within the wait bound).",
        {"type": float},
    ),
]


GROUP_TITLES = [
    "wattserve",
    "OpenAI API",
    "adapters",
    "admission and input limits",
    "service tiers and energy policy",
    "energy",
    "agents: tools and the Responses API",
    "the Batch API",
]
FLAG_GROUPS = [
    SERVER_FLAGS,
    OPENAI_FLAGS,
    ADAPTER_FLAGS,
    ADMISSION_FLAGS,
    TIER_FLAGS,
    ENERGY_FLAGS,
    AGENT_FLAGS,
    BATCH_FLAGS,
]
