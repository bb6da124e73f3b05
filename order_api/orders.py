"""Orders: placing one (record and ``order.created`` event together, or
neither), reading one with its history, listing them.

An order lives in its customer's partition: its id carries the partition
(``shop.topology.order_partition``), and its record, history, indexes and
``order.created`` event all carry that partition's tag, so placing it is one
atomic step in one slot. Its status is a projection of the events
(``status_projector``; the statuses are in ``shop.statuses``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import heapq
import json
import logging
import os
import threading
import time
from typing import Any

import redis.asyncio
import redis.exceptions

from order_api.errors import NotFound, OutcomeUnknown, Unprocessable
from order_api.schemas import (
    HistoryEntry,
    LineOut,
    OrderIn,
    OrderOut,
    OrderPage,
    OrderSummary,
)
from shop import keys
from shop.events import OrderCreated, OrderLine
from shop.topology import ORDERS_CREATED, customer_partition
from streams.autopipeline import AutoPipeline, NotSent
from streams.envelope import Header, lua_publish
from streams.nodes import Unconfirmed
from streams.scripts import Script, evaluate
from streams.topology import Topology

log = logging.getLogger(__name__)


@functools.cache
def _create(subject: str) -> Script:
    """The create-order script for an envelope layout, built once."""
    return Script("create_order", lua_publish(subject, 1) + """
-- Checks the customer, then writes the order, its order.created event, its first
-- history entry and its indexes: one round trip, all or nothing, in one slot.
-- KEYS: order, history, the partition's orders, the customer's orders, the partition's
--       pending orders, orders.created, customer, [the Idempotency-Key's record]
-- ARGV: the event's header (6: event id, order id, occurred at, causation, version,
--       traceparent),
--       created ms, body digest, key ttl, customer id, lines (JSON), total, event data
-- This very request, sent again after a dropped connection or an unconfirmed
-- write: it was placed. Each such answer writes (the same value again), so that a
-- WAIT after it waits for a replica to hold the order, whoever wrote it first.
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'id', ARGV[2])
  return {'exists'}
end
if #KEYS == 8 then
  local prior = redis.call('HMGET', KEYS[8], 'order_id', 'digest')
  if prior[1] then
    redis.call('HSET', KEYS[8], 'order_id', prior[1])
    return {prior[2] == ARGV[8] and 'replayed' or 'mismatch', prior[1]}
  end
end
if redis.call('EXISTS', KEYS[7]) == 0 then return {'unknown_customer'} end
local id, at, created_ms = ARGV[2], ARGV[3], ARGV[7]
local entry = publish(KEYS[6], 'order.created', ARGV[13])
redis.call('HSET', KEYS[1], 'id', id, 'customer_id', ARGV[10], 'lines', ARGV[11],
           'total_cents', ARGV[12], 'status', 'pending', 'reason', '',
           'created_at', at, 'updated_at', at, 'created_ms', created_ms)
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode({
  event_id = ARGV[1], type = 'order.created', at = at, stream = KEYS[6], entry_id = entry}))
redis.call('ZADD', KEYS[3], created_ms, id)
redis.call('ZADD', KEYS[4], created_ms, id)
redis.call('ZADD', KEYS[5], created_ms, id)
if #KEYS == 8 then
  redis.call('HSET', KEYS[8], 'order_id', id, 'digest', ARGV[8])
  redis.call('EXPIRE', KEYS[8], ARGV[9])
end
return {'created', entry}
""")


# How long an Idempotency-Key names its order (the API's IDEMPOTENCY_TTL_S).
IDEMPOTENCY_TTL_S = 24 * 3600


class _SecureIds:
    """``ord_`` and 64 bits from the operating system's secure generator, set to
    the customer's partition modulo the partition count: an order's id is its
    address (``GET /orders/{id}``), so it must not be guessable, and it says
    where the order lives. The bits are read 4 KiB at a time, one system call
    per 512 orders rather than one per order (5% of the API's CPU). A forked
    process starts a buffer of its own, never sharing one with its parent."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid, self.block, self.at = 0, b"", 0

    def __call__(self, partition: int = 0, partitions: int = 1) -> str:
        with self.lock:
            if self.at >= len(self.block) or self.pid != os.getpid():
                self.pid, self.block, self.at = os.getpid(), os.urandom(4096), 0
            bits = int.from_bytes(self.block[self.at : self.at + 8])
            self.at += 8
        bits += partition - bits % partitions
        if bits >= 2**64:
            bits -= partitions
        return f"ord_{bits:016x}"


new_order_id = _SecureIds()


async def place(
    r: redis.asyncio.Redis,
    topology: Topology,
    body: OrderIn,
    customer_id: str,
    idempotency_key: str | None = None,
    idempotency_ttl_s: int = IDEMPOTENCY_TTL_S,
    *,
    batched: AutoPipeline | None = None,
) -> tuple[OrderOut, bool]:
    """Price the order from the catalog and write it pending for ``customer_id``
    together with its ``order.created`` event, in one script in the customer's
    partition. With an ``idempotency_key`` (scoped to the customer), a request
    repeated within the TTL (even concurrently) gets the order the first one
    placed: returns (order, True) then. With ``batched`` (the API's), the
    commands go to Redis in one pipeline with those of the other requests of
    the moment.

    The prices are read first, apart: each product is in a slot of its own. A
    price that changes meanwhile is the price of a moment before; a product
    deleted meanwhile is rejected by the inventory step, and refunded.

    Raises ``OutcomeUnknown`` when the script may have reached Redis but no
    answer came back: the order may exist, or come to exist, under the id it
    names. A failure before anything was sent is ``NotSent`` (nothing done)."""
    via = batched or r
    product_ids = list(dict.fromkeys(line.product_id for line in body.lines))
    prices = await _prices(via, product_ids)
    partition = customer_partition(customer_id, topology.partitions)
    tag = topology.tag(partition)
    order_id = new_order_id(partition, topology.partitions)
    header = Header.new(order_id)
    created_ms = int(time.time() * 1000)
    lines = [OrderLine(product_id=line.product_id, quantity=line.quantity,
                       price_cents=prices[line.product_id]) for line in body.lines]
    total = sum(line.quantity * line.price_cents for line in lines)
    created = OrderCreated(customer_id=customer_id, lines=lines, total_cents=total)
    stream = topology.stream(ORDERS_CREATED, tag)
    script_keys = [
        keys.order(order_id, tag),
        keys.order_history(order_id, tag),
        keys.orders_index(tag),
        keys.customer_orders(customer_id, tag),
        keys.orders_by_status("pending", tag),
        stream,
        keys.customer(customer_id, tag),
    ]
    digest = ""
    if idempotency_key is not None:
        script_keys.append(keys.idempotency(customer_id, idempotency_key, tag))
        digest = hashlib.sha256(body.model_dump_json(exclude={"customer_id"}).encode()).hexdigest()
    try:
        answer = await _run(via, _create(topology.subject), script_keys, [
            *header.as_args(), created_ms, digest, idempotency_ttl_s, customer_id,
            json.dumps([line.model_dump() for line in lines], separators=(",", ":")), total,
            created.model_dump_json(),
        ])
    except NotSent:
        raise
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
            Unconfirmed) as exc:
        log.warning("%-12s order=%s outcome unknown: %s", "api", order_id, exc,
                    extra={"order_id": order_id})
        raise OutcomeUnknown(order_id, str(exc)) from exc
    match answer:
        case ["exists"]:
            return await get(r, topology, order_id), False
        case ["unknown_customer"]:
            raise NotFound(f"customer_id: customer {customer_id!r} does not exist")
        case ["mismatch", _]:
            raise Unprocessable(
                f"Idempotency-Key {idempotency_key!r} was already used for a different order "
                "body; send a new key for a new order"
            )
        case ["replayed", first]:
            log.info("%-12s order=%s repeated request (Idempotency-Key %s): same order",
                     "api", first, idempotency_key, extra={"order_id": first})
            return await get(r, topology, first), True
    entry_id = answer[1]
    if log.isEnabledFor(logging.INFO):
        log.info(
            "%-12s order=%s accepted for %s: %d line(s), %d cents → %s %s",
            "api", order_id, customer_id, len(lines), total, stream, entry_id,
            extra={"order_id": order_id, "stream": stream, "entry_id": entry_id},
        )
    first = HistoryEntry(type="order.created", at=header.occurred_at, stream=stream,
                         entry_id=entry_id, event_id=header.event_id)
    return OrderOut(
        id=order_id, customer_id=customer_id, status="pending", reason="",
        total_cents=total, lines=[LineOut(**line.model_dump()) for line in lines],
        created_at=header.occurred_at, updated_at=header.occurred_at, history=[first],
    ), False


async def _run(via: Any, script: Script, keys_: list[str], args: list[Any]) -> Any:
    """The create script; through the auto pipeline, answered once a replica
    holds what it wrote (when the API waits for replicas)."""
    if not isinstance(via, AutoPipeline):
        return await evaluate(via, script, keys_, args)
    try:
        return await via.evalsha(script.sha, len(keys_), *keys_, *args, durable=True)
    except redis.exceptions.NoScriptError:
        return await via.eval(script.source, len(keys_), *keys_, *args, durable=True)


async def _prices(via: Any, product_ids: list[str]) -> dict[str, int]:
    """Each product's price, read together; unknown products are a 404."""
    found = await _gather(via, [("HGET", keys.product(p), "price_cents") for p in product_ids])
    unknown = [p for p, price in zip(product_ids, found, strict=True) if price is None]
    if unknown:
        raise NotFound(f"lines: unknown product(s): {', '.join(map(repr, unknown))}")
    return {p: int(price) for p, price in zip(product_ids, found, strict=True)}


async def _gather(via: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Commands sent together: in the auto pipeline's next batch, or one pipeline."""
    if isinstance(via, AutoPipeline):
        return list(await asyncio.gather(*(via.execute_command(*c) for c in commands)))
    async with via.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute())


async def get(r: redis.asyncio.Redis, topology: Topology, order_id: str) -> OrderOut:
    tag = topology.tag_of(order_id)
    async with r.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.order(order_id, tag))
        pipe.hvals(keys.order_history(order_id, tag))
        record, history = await pipe.execute()
    if not record:
        raise NotFound(f"order {order_id!r} not found")
    entries = sorted((json.loads(h) for h in history), key=lambda h: (h["at"], h["entry_id"]))
    return OrderOut(**_summary(record), history=entries)


async def page(
    r: redis.asyncio.Redis,
    topology: Topology,
    customer_id: str | None,
    status: str | None,
    offset: int,
    limit: int,
) -> OrderPage:
    """Newest first, filtered by customer and status. A customer's orders are
    in its partition; without a customer, each partition's index is read to
    ``offset + limit`` and the pages merged by (creation time, id), newest
    first: the order Redis keeps each index in, so pages are stable."""
    if customer_id:
        tag = topology.tag(customer_partition(customer_id, topology.partitions))
        total, ids = await _customer_orders(r, customer_id, status, tag, offset, limit)
    else:
        indexes = [keys.orders_by_status(status, tag) if status else keys.orders_index(tag)
                   for tag in topology.tags()]
        async with r.pipeline(transaction=False) as pipe:
            for index in indexes:
                pipe.zcard(index)
                pipe.zrevrange(index, 0, offset + limit - 1, withscores=True)
            replies = await pipe.execute()
        total = sum(replies[0::2])
        newest = heapq.merge(*replies[1::2], key=lambda p: (p[1], p[0]), reverse=True)
        ids = [order_id for order_id, _ in newest][offset : offset + limit]
    async with r.pipeline(transaction=False) as pipe:
        for order_id in ids:
            pipe.hgetall(keys.order(order_id, topology.tag_of(order_id)))
        records = await pipe.execute()
    items = [OrderSummary(**_summary(rec)) for rec in records if rec]
    more = offset + limit < total
    return OrderPage(
        items=items, total=total, offset=offset, limit=limit,
        next_offset=offset + limit if more else None,
    )


async def _customer_orders(
    r: redis.asyncio.Redis, customer_id: str, status: str | None, tag: str, offset: int,
    limit: int,
) -> tuple[int, list[str]]:
    """How many orders one customer has (in one status), and a page of their
    ids, newest first."""
    if not status:
        index = keys.customer_orders(customer_id, tag)
        async with r.pipeline(transaction=False) as pipe:
            pipe.zcard(index)
            pipe.zrevrange(index, offset, offset + limit - 1)
            total, ids = await pipe.execute()
        return total, ids
    scored = await r.zinter(
        [keys.customer_orders(customer_id, tag), keys.orders_by_status(status, tag)],
        withscores=True,
    )
    ranked = [oid for oid, _ in sorted(scored, key=lambda p: (p[1], p[0]), reverse=True)]
    return len(ranked), ranked[offset : offset + limit]


def _summary(record: dict[str, str]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "customer_id": record["customer_id"],
        "status": record["status"],
        "reason": record.get("reason", ""),
        "total_cents": int(record["total_cents"]),
        "lines": json.loads(record["lines"]),
        "created_at": record["created_at"],
        "updated_at": record.get("updated_at", record["created_at"]),
    }
