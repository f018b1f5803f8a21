"""`POST /tokenize` and `POST /detokenize`, in vLLM's shapes (the paths vLLM's server gives them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends

from server.answers import DetokenizeResponse, TokenizeResponse
from server.api.errors import documented_errors
from server.api.state import Serving, get_serving
from server.protocol import DetokenizeRequest, TokenizeRequest
from server.serving.tokenize import check_served, detokenize, tokenize

router = APIRouter(responses=documented_errors(400, 401, 404, 413, 503))


def _served(serving: Serving) -> set[str]:
    names = set(serving.engine.served_model_names)
    if serving.adapters is not None:
        names.update(serving.adapters.registry.names())
    return names


@router.post("/tokenize")
async def tokenize_route(
    body: Annotated[TokenizeRequest, Body()], serving: Serving = Depends(get_serving)
) -> TokenizeResponse:
    """Tokenize a prompt, or the prompt chat messages render to through the chat template."""
    check_served(body.model, _served(serving))
    return await tokenize(serving.engine, body, serving.intake.limits)


@router.post("/detokenize")
async def detokenize_route(
    body: DetokenizeRequest, serving: Serving = Depends(get_serving)
) -> DetokenizeResponse:
    """The text of some token ids."""
    check_served(body.model, _served(serving))
    return detokenize(serving.engine, body)
