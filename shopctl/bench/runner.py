"""The consumer runner alone, in this process, against its own Redis: events
per second with a handler that does nothing and with the real payment
handler (a Lua step per event), with the default middleware and its log line
per event (INFO off, as in the benchmark, and on, into a null handler)."""

from __future__ import annotations

import gc
import logging
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import redis

from payment_worker.handlers import WORKER as PAYMENT
from shop import keys, topology
from shop.events import OrderCreated, OrderLine
from shopctl.redis_server import RedisServer, free_port
from streams import middleware
from streams.consumer import Consumer
from streams.envelope import Envelope
from streams.outcomes import Ack


def fill(r: redis.Redis, events: int) -> None:
    line = OrderLine(product_id="p", quantity=1, price_cents=100)
    pipe = r.pipeline(transaction=False)
    for i in range(events):
        order_id = f"ord_{i:08d}"
        event = Envelope.new(topology.SHOP, OrderCreated(customer_id="c", lines=[line],
                                                         total_cents=100), order_id)
        pipe.xadd(topology.ORDERS_CREATED, event.to_fields(topology.SHOP))
        pipe.hset(keys.order(order_id), "status", "pending")  # the charge step checks it
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.hset(keys.customer("c"), mapping={"name": "C", "balance_cents": 10**15})
    pipe.execute()


def events_per_s(r: redis.Redis, group: str, handlers: Mapping[str, Callable[[Any], Any]],
                 events: int) -> int:
    consumer = Consumer(r, topology.SHOP, group, handlers, name="bench", batch_size=100,
                        middleware=middleware.DEFAULT)
    consumer.ensure_groups()
    gc.freeze()  # as a worker process does before its loop (streams.worker)
    started = time.perf_counter()
    while consumer.handle_new():  # the hot path: read a batch, handle it, commit it
        pass
    elapsed = time.perf_counter() - started
    assert r.xpending(topology.ORDERS_CREATED, group)["pending"] == 0
    return round(events / elapsed)


def measure(events: int, say: Callable[[str], None]) -> dict[str, int]:
    handled = logging.getLogger("streams.handled")
    with tempfile.TemporaryDirectory(prefix="shop-runner-") as data:
        server = RedisServer(free_port(), Path(data), aof=False, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL).start()
        r = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            fill(r, events)
            results = {"noop_per_s": events_per_s(
                r, "noop", {"order.created": lambda _: Ack("nothing")}, events)}
            level = handled.level
            handled.setLevel(logging.WARNING)
            results["payment_per_s"] = events_per_s(r, PAYMENT.group, PAYMENT.handlers, events)
            r.delete(*(keys.payment(f"ord_{i:08d}") for i in range(events)))
            r.xgroup_destroy(topology.ORDERS_CREATED, topology.PAYMENT_GROUP)
            handled.setLevel(logging.INFO)
            null = logging.NullHandler()
            handled.addHandler(null)
            propagate, handled.propagate = handled.propagate, False
            results["payment_logged_per_s"] = events_per_s(r, PAYMENT.group, PAYMENT.handlers,
                                                           events)
            handled.removeHandler(null)
            handled.setLevel(level)
            handled.propagate = propagate
        finally:
            r.close()
            server.stop()
    say(f"runner      {events} events in one process: no-op handler "
        f"{results['noop_per_s']}/s, payment handler {results['payment_per_s']}/s "
        f"({results['payment_logged_per_s']}/s with a log line per event)")
    return results
