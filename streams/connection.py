"""Redis clients, one per process, built by its ``main`` and passed in."""

from __future__ import annotations

import redis
import redis.asyncio


def connect(url: str, *, block_ms: int = 1000) -> redis.Redis:
    """A synchronous client for a worker; its socket timeout outlasts a blocking read."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=block_ms / 1000 + 5,
        health_check_interval=30,
    )


def connect_async(url: str) -> redis.asyncio.Redis:
    """An asyncio client for the API."""
    return redis.asyncio.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
    )
