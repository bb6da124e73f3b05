"""Dependencies the routes declare: the process's one Redis client, and ids
in paths (the rule of ids in bodies)."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio
from fastapi import Depends, Path, Request

from order_api.schemas import ID_PATTERN, ID_RULE


# async, so that FastAPI calls it on the event loop: a plain def would be run
# in its thread pool, a thread hop per request for a dictionary lookup.
async def get_redis(request: Request) -> redis.asyncio.Redis:
    return request.app.state.redis


RedisDep = Annotated[redis.asyncio.Redis, Depends(get_redis)]


PathId = Annotated[str, Path(pattern=ID_PATTERN, description=ID_RULE, examples=["item1"])]
