"""What ``shopctl up`` runs: options and environment (REDIS_PORT, API_PORT,
DATA_DIR, REDIS_URL, ...; options win)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LauncherSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    # No default: unset means "start the embedded server".
    redis_url: str | None = Field(None, description="Use this Redis instead of the embedded one.")
    redis_port: int = Field(6379, description="Port of the embedded Redis (REDIS_PORT).")
    cluster: bool = Field(False, description="Run on a local Redis Cluster (--cluster).")
    redis_cluster_url: str | None = Field(
        None, description="Use this Redis Cluster (any node) instead of a local one.")
    redis_cluster_port: int = Field(
        7000, ge=1, le=55535 - 10_000,
        description="First port of the local cluster's nodes (REDIS_CLUSTER_PORT).")
    cluster_masters: int = Field(3, ge=3, le=16, description="Masters of the local cluster.")
    cluster_replicas: int = Field(1, ge=0, le=4, description="Replicas of each master.")
    cluster_node_timeout_ms: int = Field(
        3000, ge=500, le=60_000,
        description="How long a node may be silent before the cluster fails it over.")
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, description="Port of the API (API_PORT).")
    data_dir: Path = Field(Path(".data"), description="Where the embedded Redis keeps its AOF.")
    redis_appendfsync: Literal["everysec", "always"] = Field(
        "everysec", description="AOF fsync policy of the embedded Redis (see the README).",
    )
    partitions: int | None = Field(
        None, ge=1, le=1024, description="Partitions of each stream (PARTITIONS; 1, or 4 per "
        "master on a cluster); fixed for the life of the data folder.",
    )
    payment_workers: int = Field(1, ge=1, le=16)
    inventory_workers: int = Field(1, ge=1, le=16)
    projectors: int = Field(1, ge=1, le=16)
    metrics_port: int = Field(
        9100, ge=0, le=65535 - 64,
        description="First port of the workers' Prometheus metrics, one port each in turn "
        "(METRICS_PORT; 0: none). The API's are at /metrics on its own port.")
    demo_data: bool = Field(True, description="Load the demo catalog and customers on start.")
    gateway: str | None = Field(
        None, description="Also run a mediation gateway with this configuration (a file, or a "
        "bundled one by name: legacy-flask.yaml, webhooks.yaml).")
    api_auth: bool = Field(
        True, description="Require bearer tokens; false (--no-auth) only on a loopback bind.",
    )
