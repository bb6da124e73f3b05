"""Running one consumer as a process: logging, client, signals, exit code."""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Mapping

from streams import logs, middleware
from streams.connection import connect
from streams.consumer import Consumer, Handler
from streams.settings import WorkerSettings

log = logging.getLogger(__name__)


def serve(group: str, handlers: Mapping[str, Handler], settings: WorkerSettings) -> int:
    """Run a consumer of ``group`` until SIGTERM or SIGINT; finish the batch, exit 0."""
    logs.configure(settings.log_format, settings.log_level)
    client = connect(settings.redis_url, block_ms=settings.worker_block_ms)
    consumer = Consumer(
        client,
        group,
        handlers,
        name=settings.worker_name,
        batch_size=settings.worker_batch_size,
        block_ms=settings.worker_block_ms,
        max_deliveries=settings.worker_max_deliveries,
        retry_after_s=settings.worker_retry_after_s,
        claim_idle_ms=settings.worker_claim_idle_ms,
        retention_s=settings.stream_retention_s,
        middleware=middleware.DEFAULT,
    )

    def stop(signum: int, _frame: object) -> None:
        log.info("%s: %s received; finishing the batch in hand", group,
                 signal.Signals(signum).name)
        consumer.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("%s: consumer %s reading %s", group, consumer.name, ", ".join(consumer.streams))
    # What exists now lives as long as the process: spare the cyclic garbage
    # collector from walking it again with every batch's allocations.
    gc.freeze()
    consumer.run()
    client.close()
    log.info("%s: consumer %s stopped", group, consumer.name)
    return 0
