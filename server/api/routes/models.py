"""`GET /v1/models` and `GET /v1/models/{model}`: the base model and every served adapter."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from server.answers import ModelCard, ModelList
from server.api.errors import documented_errors
from server.api.state import AppState, Serving, get_serving, get_state
from server.errors import ModelNotFoundError

router = APIRouter(responses=documented_errors(401, 503))


def model_cards(serving: Serving, started_at: float) -> list[ModelCard]:
    """The base model's cards, one per served name as vLLM lists them, then one per current adapter."""
    engine, adapters = serving.engine, serving.adapters
    cards = [
        ModelCard(
            id=name, created=int(started_at), root=engine.model_path, max_model_len=engine.max_model_len
        )
        for name in engine.served_model_names
    ]
    if adapters is not None:
        for name in adapters.registry.names():
            entry = adapters.registry.current(name)
            if entry is not None:
                cards.append(
                    ModelCard(
                        id=name,
                        created=int(entry.loaded_at or started_at),
                        root=str(entry.ref.path),
                        parent=engine.served_model_name,
                        max_model_len=engine.max_model_len,
                    )
                )
    return cards


@router.get("/v1/models")
async def list_models(
    serving: Serving = Depends(get_serving), state: AppState = Depends(get_state)
) -> ModelList:
    """List the models this server serves."""
    return ModelList(data=model_cards(serving, state.started_at))


# `:path`: served model names may hold a slash (`org/model`), as OpenAI's client sends them unescaped.
@router.get("/v1/models/{model:path}", responses=documented_errors(404))
async def retrieve_model(
    model: str, serving: Serving = Depends(get_serving), state: AppState = Depends(get_state)
) -> ModelCard:
    """Describe one served model: the base model or an adapter."""
    for card in model_cards(serving, state.started_at):
        if card.id == model:
            return card
    raise ModelNotFoundError(f"The model '{model}' does not exist.", param="model")
