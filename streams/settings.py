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
    redis_cluster_url: str | None = Field(
        None, description="Any node of a Redis Cluster (REDIS_CLUSTER_URL); when set, it is "
        "used instead of REDIS_URL.",
    )
    redis_wait_replicas: int | None = Field(
        None, ge=0, le=16,
        description="Replicas that must hold a write before it counts: an order before its 202, "
        "an event before a worker acts on it (REDIS_WAIT_REPLICAS). Default: 1 on a cluster, "
        "0 on a single server.",
    )
    redis_wait_ms: int = Field(
        1000, ge=1, le=60_000,
        description="How long one WAIT for those replicas lasts (REDIS_WAIT_MS).",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="text: one readable line per event; json: one JSON object per line."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics: bool = Field(
        True, description="Count what happens for Prometheus: the API's /metrics, each worker's "
        "METRICS_PORT (METRICS=false: nothing counted, nothing served).",
    )
    partitions: int = Field(
        1, ge=1, le=1024,
        description="How many partitions each stream is split into (PARTITIONS); fixed "
        "for the life of the data.",
    )

    @property
    def cluster(self) -> bool:
        """Whether the data lives on a Redis Cluster."""
        return bool(self.redis_cluster_url)

    @property
    def redis_target(self) -> str:
        """The URL the process connects to: the cluster's node, or the server."""
        return self.redis_cluster_url or self.redis_url

    @property
    def wait_replicas(self) -> int:
        """How many replicas must confirm a write (see ``redis_wait_replicas``)."""
        if self.redis_wait_replicas is not None:
            return self.redis_wait_replicas
        return 1 if self.cluster else 0


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
    worker_poll_ms: int = Field(
        50, ge=1, le=1000,
        description="On a cluster, where reads cannot block across slots: the longest an "
        "idle worker waits between polls; busy, it waits far less (WORKER_POLL_MS).",
    )
    metrics_port: int | None = Field(
        None, ge=0, le=65535,
        description="Serve this process's Prometheus metrics on this port (METRICS_PORT; "
        "unset or 0: not served). `shopctl up` gives each process its own.",
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Where the metrics port listens (METRICS_HOST; 0.0.0.0 in "
        "a container).",
    )
    stream_retention_s: float = Field(
        3600, ge=0,
        description="History kept in each stream; never trimmed past an unhandled entry.",
    )
