from __future__ import annotations

from fastapi import APIRouter

from order_api.deps import RedisDep
from order_api.schemas import Health, answers

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses=answers(redis=False))
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=answers())
async def readyz(r: RedisDep) -> Health:
    """Redis is reachable (503 otherwise)."""
    await r.ping()
    return Health(status="ok")
