"""`ServerSettings`: the server's own options. The only module that reads the environment."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "wattserve"


class ServerSettings(BaseSettings):
    """HTTP-side settings; engine settings are vLLM's own `AsyncEngineArgs`."""

    model_config = SettingsConfigDict(env_prefix="WATTSERVE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_key: str | None = None
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    log_level: str = "info"
