"""`ServerSettings`: the server's own options. The only module that reads the environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "wattserve"


# Under the slo energy policy vLLM's processes busy-wait 20 ms for the next step instead of vLLM's 1 s:
# steps under load come far more often, and a gap longer than this costs one socket wake-up.
SLO_POLICY_SPIN_S = 0.02
# An answer of this many tokens, or a tenth with top_logprobs 9, is a few MB of JSON.
DEFAULT_MAX_RESPONSE_TOKENS = 2**17
# Live traffic, to the batch runner: a live request open, or one arrived within this many seconds (at a
# few requests a second the gaps between them are shorter, so the cap holds through them).
BATCH_LIVE_HOLD_S = 2.0


class ServerSettings(BaseSettings):
    """HTTP-side settings; engine settings are vLLM's own `AsyncEngineArgs`."""

    model_config = SettingsConfigDict(env_prefix="WATTSERVE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # One key, or several (vLLM's way to rotate keys): any of them is accepted. NoDecode: WATTSERVE_API_KEY
    # is one key as written, never JSON (a key `123456` or `null` must not become a number or no key).
    api_key: Annotated[str | list[str] | None, NoDecode] = None
    admin_key: str | None = None
    adapter_roots: list[Path] = Field(default_factory=list)
    adapter_dir: Path | None = None
    lora_modules: list[str] = Field(default_factory=list)
    watch_adapters: bool = False
    # A request naming an adapter folder of adapter_dir that is not loaded loads it (vLLM's resolver).
    load_adapters_on_request: bool = True
    # Serve without a startup adapter that failed to load (logged); by default such a failure stops startup.
    allow_missing_adapters: bool = False
    # auto, none, node, or parts joined by + (server/energy/meters/select.py checks them on use)
    energy_meter: str = Field(default="auto", pattern=r"^(auto|none|node|[a-z]+(\+[a-z]+)*)$")
    energy_sample_period_s: float = Field(default=0.1, gt=0, le=10)
    prefill_energy_weight: float = Field(default=0.25, ge=0)
    decode_energy_weight: float = Field(default=1.0, ge=0)
    grid_intensity_g_per_kwh: float = Field(default=475.0, ge=0)
    pue: float = Field(default=1.0, ge=1.0)
    estimated_watts_per_core: float = Field(default=15.0, gt=0)
    # Idle stretches at least this long (after a short settling time) re-measure the idle power floor.
    idle_floor_min_seconds: float = Field(default=2.0, gt=0)
    # Admission: requests in the engine at once, and waiting for a slot (None: from --max-num-seqs).
    max_concurrent_requests: int | None = Field(default=None, ge=1)
    max_queued_requests: int | None = Field(default=None, ge=0)
    # Input bounds, checked before anything is parsed or rendered.
    max_request_body_bytes: int = Field(default=16 * 2**20, ge=1024)
    max_prompt_chars: int | None = Field(default=None, ge=1)  # None: 32 characters per context token
    # Every message costs the chat template a turn whatever it holds: the count is bounded on its own.
    max_chat_messages: int = Field(default=2048, ge=1)
    # What one answer may hold, n x max_tokens x (1 + top_logprobs) over its prompts (None: the larger
    # of DEFAULT_MAX_RESPONSE_TOKENS and the context length, so one full-context answer always fits).
    max_response_tokens: int | None = Field(default=None, ge=1)
    # A request head (request line and headers) and its header count, as vLLM's flags name them; a head
    # beyond either gets 431. vLLM allows 4 MiB: far more than any client sends, and each open connection
    # may hold that much.
    h11_max_incomplete_event_size: int = Field(default=64 * 2**10, ge=1024)
    h11_max_header_count: int = Field(default=256, ge=1)
    # A connection whose client takes none of the pending response for this long is closed (0: never).
    write_timeout_seconds: float = Field(default=30.0, ge=0)
    # /metrics and /v1/energy are rendered off the event loop, at most once per this many milliseconds
    # however many clients scrape; each scrape still reflects everything that happened before it arrived.
    scrape_min_interval_ms: int = Field(default=250, ge=0)
    # response_format schemas: size caps (OpenAI's documented limits for enum values and properties), then
    # one bounded compile per new schema before the engine sees it (0 seconds: no compile, as before).
    max_schema_bytes: int = Field(default=256 * 2**10, ge=1024)
    max_schema_enum_values: int = Field(default=1000, ge=1)
    max_schema_properties: int = Field(default=5000, ge=1)
    max_grammar_compile_seconds: float = Field(default=5.0, ge=0)
    grammar_compile_workers: int = Field(default=2, ge=1)
    disable_fastapi_docs: bool = False
    # After vLLM's engine dies, answer in-flight requests with an error, then exit non-zero (a supervisor
    # restarts the server); with this set, keep running and answer 503, as vLLM's
    # VLLM_KEEP_ALIVE_ON_ENGINE_DEATH does.
    keep_alive_on_engine_death: bool = False
    # How long SIGTERM waits for in-flight requests before streams still running are cut.
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    # Service tiers: the flex lane (None: from --max-num-seqs).
    flex_max_wait_seconds: float = Field(default=30.0, ge=0)
    flex_max_queued: int | None = Field(default=None, ge=0)
    flex_batch_size: int | None = Field(default=None, ge=1)
    flex_riders_per_step: int | None = Field(default=None, ge=1)
    # How long vLLM's processes busy-wait between engine steps (None: vLLM's own default, or
    # SLO_POLICY_SPIN_S under the slo energy policy).
    engine_spin_seconds: float | None = Field(default=None, ge=0)
    # The SLO governor: off, or tune batching and concurrency to these p90 targets.
    energy_policy: Literal["off", "slo"] = "off"
    slo_ttft_p90: float = Field(default=0.5, gt=0)
    slo_itl_p90: float = Field(default=0.05, gt=0)
    # Grid carbon intensity over time: a file or an HTTP endpoint (None: the constant --grid-intensity).
    grid_intensity_source: str | None = None
    grid_intensity_refresh_seconds: float = Field(default=300.0, gt=0)
    grid_intensity_headers: list[str] = Field(default_factory=list)
    # Hold flex work while the grid is dirtier than this (gCO2e/kWh), within the flex wait bound.
    flex_max_intensity: float | None = Field(default=None, ge=0)
    # Which GPUs the engine uses, as CUDA sees them; NVML is asked about those only.
    cuda_visible_devices: str | None = Field(
        default=None, validation_alias=AliasChoices("CUDA_VISIBLE_DEVICES", "WATTSERVE_CUDA_VISIBLE_DEVICES")
    )
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    log_level: str = "info"
    # As `vllm serve` has them: a chat template (file or literal), usage details, CORS, TLS, proxy path.
    chat_template: str | None = None
    default_chat_template_kwargs: dict[str, Any] | None = None
    response_role: str = "assistant"
    fingerprint_mode: Literal["full", "hash", "custom", "none"] = "full"
    fingerprint_value: str | None = None
    enable_prompt_tokens_details: bool = False
    force_include_usage: bool = False
    allowed_origins: list[str] = Field(default_factory=list)
    allowed_methods: list[str] = Field(default_factory=lambda: ["*"])
    allowed_headers: list[str] = Field(default_factory=lambda: ["*"])
    allow_credentials: bool = False
    ssl_keyfile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_ca_certs: Path | None = None
    ssl_cert_reqs: int = Field(default=0, ge=0, le=2)  # ssl.CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED
    ssl_ciphers: str | None = None  # None: uvicorn's own
    uds: str | None = None  # a Unix domain socket to listen on instead of host and port
    root_path: str = ""
    disable_uvicorn_access_log: bool = False
    middleware: list[str] = Field(default_factory=list)  # ASGI middleware import paths
    enable_request_id_headers: bool = False
    # Tools as `vllm serve` takes them (the reasoning parser is an engine flag, read by the engine).
    enable_auto_tool_choice: bool = False
    tool_call_parser: str | None = None
    tool_parser_plugin: str | None = None
    tool_strict_level: Literal["auto", "function", "parameter"] = "auto"
    max_tools: int = Field(default=128, ge=1)
    # The Responses API's store: a SQLite file, bounded by count, bytes and age.
    responses_store: Path | None = None  # None: responses.sqlite3 under cache_dir
    responses_store_max_count: int = Field(default=100_000, ge=1)
    responses_store_max_bytes: int = Field(default=2 * 2**30, ge=2**20)
    responses_store_ttl_seconds: float = Field(default=30 * 86400.0, gt=0)
    # The Batch API's files and batches: SQLite by default, PostgreSQL for several replicas.
    batch_store: str | None = None  # None: sqlite:///<cache_dir>/batches.sqlite3
    max_batch_file_bytes: int = Field(default=100 * 2**20, ge=1024)
    max_batch_lines: int = Field(default=50_000, ge=1)
    max_batch_storage_bytes: int = Field(default=10 * 2**30, ge=2**20)
    batch_file_ttl_seconds: float = Field(default=30 * 86400.0, gt=0)
    batch_max_in_flight: int | None = Field(default=None, ge=1)  # None: half of max_num_seqs
    # Live: see BATCH_LIVE_HOLD_S. 1, not 2: beside a second batch sequence live TTFT p90 rose 1.3x, beside
    # one it held within 1.05x (docs/benchmarks.md, "The Batch API against live traffic").
    batch_max_in_flight_beside_live: int = Field(default=1, ge=0)
    batch_lease_seconds: float = Field(default=60.0, gt=0)

    @property
    def api_keys(self) -> tuple[str, ...]:
        """The user keys, any of which opens /v1 (none: it is open)."""
        if self.api_key is None:
            return ()
        return (self.api_key,) if isinstance(self.api_key, str) else tuple(self.api_key)

    @property
    def resolved_engine_spin_seconds(self) -> float | None:
        """The busy-wait the engine gets: as set, else short under the slo energy policy, else vLLM's."""
        if self.engine_spin_seconds is None and self.energy_policy == "slo":
            return SLO_POLICY_SPIN_S
        return self.engine_spin_seconds

    @field_validator("port", mode="before")
    @classmethod
    def _not_a_service_link(cls, value: object) -> object:
        # Kubernetes sets WATTSERVE_PORT=tcp://<ip>:<port> in every pod of a namespace with a Service named
        # `wattserve`: say so rather than "not a valid integer".
        if isinstance(value, str) and value.startswith("tcp://"):
            raise ValueError(
                f"{value!r} is a Kubernetes service link (a Service named 'wattserve' sets WATTSERVE_PORT): "
                "set enableServiceLinks: false on the pod, or pass --port"
            )
        return value
