"""Settings shared by every process, read from the environment once, in each
process's ``main``, and passed in."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a server to this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Where Redis is (REDIS_URL)."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="text: one readable line per event; json: one JSON object per line."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    partitions: int = Field(
        1, ge=1, le=1024,
        description="How many partitions each stream is split into (PARTITIONS); fixed "
        "for the life of the data.",
    )


class WorkerSettings(Settings):
    worker_name: str | None = Field(
        None, description="Consumer name in the group; default host-pid, unique per replica."
    )
    worker_batch_size: int = Field(100, ge=1, le=10_000, description="Messages per read.")
    worker_block_ms: int = Field(
        1000, ge=1, le=60_000, description="How long one read waits for new messages."
    )
    worker_max_deliveries: int = Field(
        5, ge=1, description="Deliveries before a failing message is dead-lettered."
    )
    worker_retry_after_s: float = Field(
        1.0, gt=0,
        description="Wait before a failed message is retried; doubles with each delivery.",
    )
    worker_claim_idle_ms: int = Field(
        10_000, ge=10,
        description="A message pending this long (its consumer died) is claimed by another.",
    )
    stream_retention_s: float = Field(
        3600, ge=0,
        description="History kept in each stream; never trimmed past an unhandled entry.",
    )
