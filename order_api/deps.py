"""Dependencies the routes declare: the process's one Redis client."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio
from fastapi import Depends, Request


def get_redis(request: Request) -> redis.asyncio.Redis:
    return request.app.state.redis


RedisDep = Annotated[redis.asyncio.Redis, Depends(get_redis)]
