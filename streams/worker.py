"""What a worker is (its handlers and a registration) and running one as a
process: logging, client, signals, exit code."""

from __future__ import annotations

import gc
import logging
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from streams import logs, metrics, middleware, recovery, tracing
from streams.connection import connect, redacted
from streams.consumer import Consumer, Handler
from streams.delivery import Middleware
from streams.nodes import TRANSIENT
from streams.settings import WorkerSettings
from streams.topology import Topology

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registration:
    """A worker: its group in a topology, and a handler per event type it reads."""

    topology: Topology
    group: str
    handlers: Mapping[str, Handler]
    # What this worker adds to the runner's middleware when its metrics are on
    # (the projector's time from an order's POST to its final status).
    metrics: Sequence[Middleware] = ()

    def consumer(self, client: redis.Redis, partitions: int = 1, **options: Any) -> Consumer:
        """The runner for this worker, with ``partitions`` (options: ``Consumer``'s)."""
        return Consumer(client, self.topology.with_partitions(partitions), self.group,
                        self.handlers, **options)


def serve(worker: Registration, settings: WorkerSettings) -> int:
    """Run a consumer of the worker's group until SIGTERM or SIGINT; finish the
    batch, exit 0."""
    logs.configure(settings.log_format, settings.log_level)
    tracing.configure(worker.group)
    group = worker.group
    measured = settings.metrics and metrics.serve(settings.metrics_port, settings.metrics_host,
                                                  settings.worker_name or group)
    consumer: Consumer | None = None
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        log.info("%s: %s received; finishing the batch in hand", group,
                 signal.Signals(signum).name)
        stopping = True
        if consumer is not None:
            consumer.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    client = connect_when_ready(settings, group, lambda: stopping)
    if client is None:
        return 0
    consumer = worker.consumer(
        client,
        settings.partitions,
        name=settings.worker_name,
        batch_size=settings.worker_batch_size,
        block_ms=settings.worker_block_ms,
        max_deliveries=settings.worker_max_deliveries,
        retry_after_s=settings.worker_retry_after_s,
        claim_idle_ms=settings.worker_claim_idle_ms,
        retention_s=settings.stream_retention_s,
        middleware=(*middleware.DEFAULT, metrics.count, *worker.metrics) if measured
        else middleware.DEFAULT,
        wait_replicas=settings.wait_replicas,
        wait_ms=settings.redis_wait_ms,
        poll_ms=settings.worker_poll_ms,
    )
    log.info("%s: consumer %s reading %d stream(s) of %d partition(s) on %s%s: %s", group,
             consumer.name, len(consumer.streams), settings.partitions,
             "the cluster at " if settings.cluster else "", redacted(settings.redis_target),
             _summary(consumer.streams))
    # What exists now lives as long as the process: spare the cyclic garbage
    # collector from walking it again with every batch's allocations.
    gc.freeze()
    if not stopping:
        consumer.run()
    client.close()
    tracing.shutdown()
    log.info("%s: consumer %s stopped", group, consumer.name)
    return 0


def connect_when_ready(settings: WorkerSettings, group: str,
                       stopping: Callable[[], bool]) -> Any:
    """The process's client, once it can be had: a cluster's client reads the
    slots as it is made, and a worker started while its cluster fails over
    (or none of its nodes answers yet) waits for one rather than dying."""
    outage: recovery.Outage | None = None
    while not stopping():
        try:
            client = connect(settings.redis_target, cluster=settings.cluster,
                             block_ms=settings.worker_block_ms)
        except TRANSIENT as exc:
            outage = outage or recovery.Outage(group, exc)
            deadline = time.monotonic() + outage.next_delay()
            while not stopping() and time.monotonic() < deadline:
                time.sleep(0.05)
            continue
        if outage:
            outage.over()
        return client
    return None


def _summary(streams: list[str], shown: int = 8) -> str:
    more = len(streams) - shown
    return ", ".join(streams[:shown]) + (f" and {more} more" if more > 0 else "")
