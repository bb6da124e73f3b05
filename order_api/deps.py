"""Dependencies the routes declare: the process's one Redis client, its settings."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio
from fastapi import Depends, Request

from order_api.settings import ApiSettings


def get_redis(request: Request) -> redis.asyncio.Redis:
    return request.app.state.redis


RedisDep = Annotated[redis.asyncio.Redis, Depends(get_redis)]


def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
