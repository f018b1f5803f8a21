"""Adapter management: wattserve's `/v1/adapters` API and vLLM's load/unload bodies, mapped onto it."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from adapters.errors import AdapterNotFoundError
from adapters.loader import AdapterManager
from adapters.registry import AdapterEntry
from server.api.errors import documented_errors
from server.api.state import Serving, get_serving
from server.errors import InvalidRequestError
from server.protocol import RequestBody

router = APIRouter(responses=documented_errors(400, 401, 404, 409, 413, 503))


class LoadAdapterRequest(RequestBody):
    """Body of `POST /v1/adapters`."""

    model_config = ConfigDict(extra="forbid")
    name: str
    path: str
    version: str | None = None
    pinned: bool = False


class VllmLoadRequest(RequestBody):
    """vLLM's `POST /v1/load_lora_adapter` body."""

    model_config = ConfigDict(extra="ignore")
    lora_name: str
    lora_path: str
    load_inplace: bool = False


class VllmUnloadRequest(RequestBody):
    """vLLM's `POST /v1/unload_lora_adapter` body."""

    model_config = ConfigDict(extra="ignore")
    lora_name: str
    lora_int_id: int | None = None


class AdapterInfo(BaseModel):
    """One adapter version as the catalogue sees it."""

    object: str = "adapter"
    name: str
    version: str
    adapter_id: int
    path: str
    base_model: str | None
    rank: int
    alpha: float
    target_modules: list[str]
    size_bytes: int
    warnings: list[str]
    state: str
    reason: str | None
    pinned: bool
    in_flight: int
    loaded_at: float | None
    load_seconds: float | None


class AdapterList(BaseModel):
    """Body of `GET /v1/adapters`."""

    object: str = "list"
    data: list[AdapterInfo] = Field(default_factory=list)


def adapter_info(entry: AdapterEntry) -> AdapterInfo:
    """The wire form of a catalogue entry."""
    facts = entry.ref.facts
    return AdapterInfo(
        name=entry.ref.name,
        version=entry.ref.version,
        adapter_id=entry.ref.adapter_id,
        path=str(facts.path),
        base_model=facts.base_model,
        rank=facts.rank,
        alpha=facts.alpha,
        target_modules=list(facts.target_modules),
        size_bytes=facts.size_bytes,
        warnings=list(facts.warnings),
        state=entry.state.value,
        reason=entry.reason,
        pinned=entry.pinned,
        in_flight=entry.in_flight,
        loaded_at=entry.loaded_at,
        load_seconds=entry.load_seconds,
    )


def _manager(serving: Serving) -> AdapterManager:
    if serving.adapters is None:
        raise InvalidRequestError(
            "LoRA adapters are not enabled on this server; start it with --enable-lora."
        )
    return serving.adapters


@router.get("/v1/adapters")
async def list_adapters(serving: Serving = Depends(get_serving)) -> AdapterList:
    """Every adapter version the catalogue knows, with its state."""
    return AdapterList(data=[adapter_info(entry) for entry in _manager(serving).registry.entries()])


@router.get("/v1/adapters/{name}")
async def get_adapter(name: str, serving: Serving = Depends(get_serving)) -> AdapterInfo:
    """The version `name` serves now (or its latest version, if none serves)."""
    registry = _manager(serving).registry
    entry = registry.current(name) or next(
        (entry for entry in reversed(registry.entries()) if entry.ref.name == name), None
    )
    if entry is None:
        raise AdapterNotFoundError(f"No adapter named '{name}'.")
    return adapter_info(entry)


@router.post("/v1/adapters")
async def load_adapter(body: LoadAdapterRequest, serving: Serving = Depends(get_serving)) -> AdapterInfo:
    """Load an adapter; an existing name is replaced by the new version without a gap."""
    entry = await _manager(serving).load(body.name, body.path, version=body.version, pinned=body.pinned)
    return adapter_info(entry)


@router.delete("/v1/adapters/{name}")
async def unload_adapter(name: str, serving: Serving = Depends(get_serving)) -> AdapterInfo:
    """Stop serving `name` at once, let in-flight requests finish, then remove it from the engine."""
    return adapter_info(await _manager(serving).unload(name))


@router.post("/v1/adapters/{name}/pin")
async def pin_adapter(name: str, serving: Serving = Depends(get_serving)) -> AdapterInfo:
    """Keep `name` resident in the engine."""
    return adapter_info(await _manager(serving).set_pinned(name, True))


@router.post("/v1/adapters/{name}/unpin")
async def unpin_adapter(name: str, serving: Serving = Depends(get_serving)) -> AdapterInfo:
    """Clear the pinned flag (vLLM has no unpin: the version stays resident until replaced or unloaded)."""
    return adapter_info(await _manager(serving).set_pinned(name, False))


@router.post("/v1/load_lora_adapter", response_class=PlainTextResponse)
async def vllm_load(body: VllmLoadRequest, serving: Serving = Depends(get_serving)) -> str:
    """vLLM-compatible load; `load_inplace` is what replacement always does here."""
    await _manager(serving).load(body.lora_name, body.lora_path)
    return f"Success: LoRA adapter '{body.lora_name}' added successfully."


@router.post("/v1/unload_lora_adapter", response_class=PlainTextResponse)
async def vllm_unload(body: VllmUnloadRequest, serving: Serving = Depends(get_serving)) -> str:
    """vLLM-compatible unload (which, unlike vLLM's, also removes the adapter from the engine)."""
    await _manager(serving).unload(body.lora_name)
    return f"Success: LoRA adapter '{body.lora_name}' removed successfully."
