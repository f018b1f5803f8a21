"""`GET /v1/models`."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from server.errors import documented_errors
from server.generation import EngineClient
from server.protocol import ModelCard, ModelList
from server.state import AppState, get_engine, get_state

router = APIRouter(responses=documented_errors(401, 503))


@router.get("/v1/models")
async def list_models(
    engine: EngineClient = Depends(get_engine), state: AppState = Depends(get_state)
) -> ModelList:
    """List the models this server serves."""
    card = ModelCard(
        id=engine.served_model_name,
        created=int(state.started_at),
        root=engine.model_path,
        max_model_len=engine.max_model_len,
    )
    cards = [card]
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
    return ModelList(data=cards)
