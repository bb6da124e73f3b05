"""Dependencies the routes declare: the process's one Redis client, its
topology, and ids in paths (the rule of ids in bodies)."""

from __future__ import annotations

from typing import Annotated, Any

import redis.asyncio
from fastapi import Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from order_api.schemas import ID_PATTERN, ID_RULE
from streams.topology import Topology


# async, so that FastAPI calls it on the event loop: a plain def would be run
# in its thread pool, a thread hop per request for a dictionary lookup.
async def get_redis(request: Request) -> redis.asyncio.Redis:
    return request.app.state.redis


RedisDep = Annotated[redis.asyncio.Redis, Depends(get_redis)]


async def get_topology(request: Request) -> Topology:
    """The shop's topology with this process's partition count."""
    return request.app.state.topology


TopologyDep = Annotated[Topology, Depends(get_topology)]


PathId = Annotated[str, Path(pattern=ID_PATTERN, description=ID_RULE, examples=["item1"])]


def refuse_unknown(names: Any, known: set[str]) -> None:
    """A query parameter the route does not take is a mistake (``?custmer_id=``
    would otherwise list every order): 422, naming it."""
    unknown = sorted(set(names) - known)
    if unknown:
        raise RequestValidationError([
            {"type": "extra_forbidden", "loc": ("query", name), "msg": "Extra inputs are not "
             "permitted", "input": None} for name in unknown])


async def known_query(request: Request) -> None:
    """Every route's: its query parameters are those it declares."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    declared: set[str] = set()
    found = [route.dependant] if isinstance(route, APIRoute) else []
    while found:  # the route's own parameters and its dependencies'
        dependant = found.pop()
        declared |= {param.alias for param in dependant.query_params}
        found += dependant.dependencies
    refuse_unknown(request.query_params.keys(), declared)
