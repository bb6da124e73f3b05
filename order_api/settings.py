"""Settings of the API process."""

from __future__ import annotations

from pydantic import Field

from order_api.orders import IDEMPOTENCY_TTL_S
from streams.settings import Settings


class ApiSettings(Settings):
    api_host: str = Field("127.0.0.1", description="Address the API binds (API_HOST).")
    api_port: int = Field(8000, ge=1, le=65535, description="Port of the API (API_PORT).")
    api_redis_connections: int = Field(
        64, ge=1, le=10_000,
        description="Redis connections the API may open (API_REDIS_CONNECTIONS).",
    )
    idempotency_ttl_s: int = Field(
        IDEMPOTENCY_TTL_S, ge=1,
        description="How long an Idempotency-Key names its order (IDEMPOTENCY_TTL_S).",
    )
