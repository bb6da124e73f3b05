from __future__ import annotations

from fastapi import APIRouter

from order_api.deps import RedisDep, TopologyDep
from order_api.errors import Unavailable
from order_api.schemas import Health, answers
from streams.connection import is_cluster, unserved

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses=answers(redis=False))
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=answers())
async def readyz(r: RedisDep, topology: TopologyDep) -> Health:
    """Redis is reachable; on a cluster, every partition's slot has a master that
    answers (503 otherwise, saying which)."""
    if not is_cluster(r):
        await r.ping()
    elif problems := await unserved(r, topology.tags()):
        raise Unavailable("not ready: " + "; ".join(problems))
    return Health(status="ok")
