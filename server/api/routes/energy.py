"""`GET /v1/energy`: the energy summary (meter, watts now, joules since start, idle share, J/token)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from server.api.errors import documented_errors
from server.api.state import AppState, get_state
from server.energy.summary import EnergySummary

router = APIRouter(responses=documented_errors(401))


@router.get("/v1/energy", response_model=EnergySummary)
async def energy_summary(state: AppState = Depends(get_state)) -> Response:
    """Energy since start, overall, per adapter and per tier; `source` tells measured from estimated."""
    snapshot = await state.scrapes.latest()
    return Response(snapshot.energy, media_type="application/json")
