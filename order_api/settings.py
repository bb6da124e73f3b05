"""Settings of the API process."""

from __future__ import annotations

from pydantic import Field, model_validator

from order_api.orders import IDEMPOTENCY_TTL_S
from streams.settings import Settings, is_loopback


class ApiSettings(Settings):
    api_host: str = Field("127.0.0.1", description="Address the API binds (API_HOST).")
    api_port: int = Field(8000, ge=1, le=65535, description="Port of the API (API_PORT).")
    api_auth: bool = Field(
        True, description="Require bearer tokens (API_AUTH); false only on a loopback bind.",
    )
    api_trusted_hosts: str = Field(
        "127.0.0.1,localhost,[::1]",
        description="Host headers the API answers, comma-separated; '*' for any "
        "(API_TRUSTED_HOSTS).",
    )
    api_cors_origins: str = Field(
        "", description="Browser origins allowed to call the API, comma-separated; none by "
        "default (API_CORS_ORIGINS).",
    )
    api_max_body_bytes: int = Field(
        64 * 1024, ge=1024, le=64 * 2**20,
        description="Largest request body; a larger one is refused (413) unread "
        "(API_MAX_BODY_BYTES).",
    )
    api_max_header_bytes: int = Field(
        16 * 1024, ge=1024, le=2**20,
        description="Largest request line and headers together (431) (API_MAX_HEADER_BYTES).",
    )
    api_header_timeout_s: float = Field(
        10.0, gt=0, le=300,
        description="Time a client has to send a request's line and headers "
        "(API_HEADER_TIMEOUT_S).",
    )
    api_body_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Time a client has to send a body (API_BODY_TIMEOUT_S).",
    )
    api_keepalive_timeout_s: int = Field(
        5, ge=1, le=300, description="An idle keep-alive connection is closed after this "
        "(API_KEEPALIVE_TIMEOUT_S).",
    )
    api_redis_connections: int = Field(
        64, ge=1, le=10_000,
        description="Redis connections the API may open (API_REDIS_CONNECTIONS).",
    )
    api_redis_timeout_s: float = Field(
        5.0, gt=0, le=60,
        description="How long the API waits for Redis to answer, and for a free connection "
        "(API_REDIS_TIMEOUT_S).",
    )
    idempotency_ttl_s: int = Field(
        IDEMPOTENCY_TTL_S, ge=1,
        description="How long an Idempotency-Key names its order (IDEMPOTENCY_TTL_S).",
    )

    @model_validator(mode="after")
    def _auth_off_only_on_loopback(self) -> ApiSettings:
        if not self.api_auth and not is_loopback(self.api_host):
            raise ValueError(
                f"API_AUTH=false lets anyone who reaches the API do anything, so it is only "
                f"allowed on a loopback address, not API_HOST={self.api_host}"
            )
        return self

    @property
    def trusted_hosts(self) -> list[str]:
        return [h.strip().lower() for h in self.api_trusted_hosts.split(",") if h.strip()]

    @property
    def cors_origins(self) -> list[str]:
        return [o.strip() for o in self.api_cors_origins.split(",") if o.strip()]
