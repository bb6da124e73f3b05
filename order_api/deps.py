"""Dependencies the routes declare: the process's one Redis client."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio
from fastapi import Depends, Request


# async, so that FastAPI calls it on the event loop: a plain def would be run
# in its thread pool, a thread hop per request for a dictionary lookup.
async def get_redis(request: Request) -> redis.asyncio.Redis:
    return request.app.state.redis


RedisDep = Annotated[redis.asyncio.Redis, Depends(get_redis)]
