"""`GET /v1/models` and `GET /v1/models/{model}`: the base model and every served adapter."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from server.api.state import AppState, get_engine, get_state
from server.errors import ModelNotFoundError, documented_errors
from server.protocol import ModelCard, ModelList
from server.serving.prepare import EngineClient

router = APIRouter(responses=documented_errors(401, 503))


def model_cards(engine: EngineClient, state: AppState) -> list[ModelCard]:
    """The base model's card, then one per adapter with a current version."""
    cards = [
        ModelCard(
            id=engine.served_model_name,
            created=int(state.started_at),
            root=engine.model_path,
            max_model_len=engine.max_model_len,
        )
    ]
    if state.adapters is not None:
        for name in state.adapters.registry.names():
            entry = state.adapters.registry.current(name)
            if entry is not None:
                cards.append(
                    ModelCard(
                        id=name,
                        created=int(entry.loaded_at or state.started_at),
                        root=str(entry.ref.path),
                        parent=engine.served_model_name,
                        max_model_len=engine.max_model_len,
                    )
                )
    return cards


@router.get("/v1/models")
async def list_models(
    engine: EngineClient = Depends(get_engine), state: AppState = Depends(get_state)
) -> ModelList:
    """List the models this server serves."""
    return ModelList(data=model_cards(engine, state))


# `:path`: served model names may hold a slash (`org/model`), as OpenAI's client sends them unescaped.
@router.get("/v1/models/{model:path}", responses=documented_errors(404))
async def retrieve_model(
    model: str, engine: EngineClient = Depends(get_engine), state: AppState = Depends(get_state)
) -> ModelCard:
    """Describe one served model: the base model or an adapter."""
    for card in model_cards(engine, state):
        if card.id == model:
            return card
    raise ModelNotFoundError(f"The model '{model}' does not exist.", param="model")
