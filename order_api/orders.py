"""Orders: placing one (record and ``order.created`` event together, or
neither), reading one with its history, listing them.

An order's status is a projection of the events (``order_api.projector``):

    pending -> paid -> completed | refunded
    pending -> rejected (payment declined)
    any     -> failed (a message about it was dead-lettered)
"""

from __future__ import annotations

import hashlib
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
from streams import keys
from streams.autopipeline import AutoPipeline, NotSent
from streams.envelope import Header
from streams.scripts import Script, evaluate

STATUSES = ("pending", "paid", "failed", "completed", "rejected", "refunded")
# A status only ever moves to a higher rank. `failed` ranks below the other
# final statuses so that a dead letter replayed successfully can still finish
# its order; a late event never moves an order back.
RANK = {"pending": 0, "paid": 1, "failed": 2, "completed": 3, "rejected": 3, "refunded": 3}

log = logging.getLogger(__name__)

CREATE = Script(
    "create_order",
    """
-- Checks the customer and prices every line from the catalog, then writes the order,
-- its order.created event, its first history entry and its indexes: one round trip,
-- all or nothing.
-- KEYS: order, history, all orders, customer's orders, pending orders, orders.created,
--       customer, [the Idempotency-Key's record], then one key per distinct product
-- ARGV: order id, created ms, body digest, key ttl, customer id, the header's event
--       id, occurred at and version, then m (distinct products), the m product ids,
--       then product number (1..m) and quantity per line
local m = tonumber(ARGV[9])
local first_product = #KEYS - m
-- This very request, sent again after a dropped connection: it was placed.
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
if first_product == 8 then
  local prior = redis.call('HMGET', KEYS[8], 'order_id', 'digest')
  if prior[1] then
    return {prior[2] == ARGV[3] and 'replayed' or 'mismatch', prior[1]}
  end
end
if redis.call('EXISTS', KEYS[7]) == 0 then return {'unknown_customer'} end
local prices, unknown = {}, {}
for i = 1, m do
  local price = redis.call('HGET', KEYS[first_product + i], 'price_cents')
  if price then prices[i] = tonumber(price) else unknown[#unknown + 1] = ARGV[9 + i] end
end
if #unknown > 0 then return {'unknown_products', unpack(unknown)} end
-- Totals stay below 1e14 (schemas.py bounds prices and quantities), so cjson writes
-- them as plain integers.
local lines, total = {}, 0
for i = 10 + m, #ARGV, 2 do
  local product, quantity = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  lines[#lines + 1] = {product_id = ARGV[9 + product], quantity = quantity,
                       price_cents = prices[product]}
  total = total + quantity * prices[product]
end
local id, at = ARGV[1], ARGV[7]
local data = cjson.encode({customer_id = ARGV[5], lines = lines, total_cents = total})
local entry = redis.call('XADD', KEYS[6], '*', 'type', 'order.created', 'event_id', ARGV[6],
                         'order_id', id, 'occurred_at', at, 'causation_id', '', 'v', ARGV[8],
                         'data', data)
redis.call('HSET', KEYS[1], 'id', id, 'customer_id', ARGV[5], 'lines', cjson.encode(lines),
           'total_cents', string.format('%d', total), 'status', 'pending', 'reason', '',
           'created_at', at, 'updated_at', at, 'created_ms', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[6], cjson.encode({
  event_id = ARGV[6], type = 'order.created', at = at, stream = KEYS[6], entry_id = entry}))
redis.call('ZADD', KEYS[3], ARGV[2], id)
redis.call('ZADD', KEYS[4], ARGV[2], id)
redis.call('ZADD', KEYS[5], ARGV[2], id)
if first_product == 8 then
  redis.call('HSET', KEYS[8], 'order_id', id, 'digest', ARGV[3])
  redis.call('EXPIRE', KEYS[8], ARGV[4])
end
local answer = {'created', entry}
for i = 1, m do answer[#answer + 1] = prices[i] end
return answer
""",
)

# How long an Idempotency-Key names its order (the API's IDEMPOTENCY_TTL_S).
IDEMPOTENCY_TTL_S = 24 * 3600


class _SecureIds:
    """``ord_`` and 64 bits from the operating system's secure generator: an
    order's id is its address (``GET /orders/{id}``), so it must not be
    guessable. The bits are read 4 KiB at a time, one system call per 512
    orders rather than one per order (5% of the API's CPU). A forked process
    starts a buffer of its own, never sharing one with its parent."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid, self.block, self.at = 0, b"", 0

    def __call__(self) -> str:
        with self.lock:
            if self.at >= len(self.block) or self.pid != os.getpid():
                self.pid, self.block, self.at = os.getpid(), os.urandom(4096), 0
            bits = self.block[self.at : self.at + 8]
            self.at += 8
        return "ord_" + bits.hex()


new_order_id = _SecureIds()


async def place(
    r: redis.asyncio.Redis,
    body: OrderIn,
    customer_id: str,
    idempotency_key: str | None = None,
    idempotency_ttl_s: int = IDEMPOTENCY_TTL_S,
    *,
    batched: AutoPipeline | None = None,
) -> tuple[OrderOut, bool]:
    """Price the order from the catalog and write it pending for ``customer_id``
    together with its ``order.created`` event, in one script (one round trip).
    With an ``idempotency_key`` (scoped to the customer), a request repeated
    within the TTL (even concurrently) gets the order the first one placed:
    returns (order, True) then. With ``batched`` (the API's), the script goes
    to Redis in one pipeline with those of the other requests of the moment.

    Raises ``OutcomeUnknown`` when the script may have reached Redis but no
    answer came back: the order may exist, or come to exist, under the id it
    names. A failure before anything was sent is ``NotSent`` (nothing done)."""
    product_ids = list(dict.fromkeys(line.product_id for line in body.lines))
    number = {product_id: i for i, product_id in enumerate(product_ids, 1)}
    order_id = new_order_id()
    header = Header.new(order_id)
    created_ms = int(time.time() * 1000)
    script_keys = [
        keys.order(order_id),
        keys.order_history(order_id),
        keys.orders_index(),
        keys.customer_orders(customer_id),
        keys.orders_by_status("pending"),
        keys.ORDERS_CREATED,
        keys.customer(customer_id),
    ]
    digest = ""
    if idempotency_key is not None:
        script_keys.append(keys.idempotency(customer_id, idempotency_key))
        digest = hashlib.sha256(body.model_dump_json(exclude={"customer_id"}).encode()).hexdigest()
    script_keys += [keys.product(p) for p in product_ids]
    try:
        answer = await evaluate(batched or r, CREATE, script_keys, [
            order_id, created_ms, digest, idempotency_ttl_s, customer_id,
            header.event_id, header.occurred_at, header.v, len(product_ids), *product_ids,
            *(part for line in body.lines for part in (number[line.product_id], line.quantity)),
        ])
    except NotSent:
        raise
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        log.warning("%-12s order=%s outcome unknown: %s", "api", order_id, exc,
                    extra={"order_id": order_id})
        raise OutcomeUnknown(order_id, str(exc)) from exc
    match answer:
        case ["exists"]:
            return await get(r, order_id), False
        case ["unknown_customer"]:
            raise NotFound(f"customer_id: customer {customer_id!r} does not exist")
        case ["unknown_products", *unknown]:
            raise NotFound(f"lines: unknown product(s): {', '.join(map(repr, unknown))}")
        case ["mismatch", _]:
            raise Unprocessable(
                f"Idempotency-Key {idempotency_key!r} was already used for a different order "
                "body; send a new key for a new order"
            )
        case ["replayed", first]:
            log.info("%-12s order=%s repeated request (Idempotency-Key %s): same order",
                     "api", first, idempotency_key, extra={"order_id": first})
            return await get(r, first), True
    entry_id, *prices = answer[1:]
    price_of = dict(zip(product_ids, prices, strict=True))
    lines = [LineOut(product_id=line.product_id, quantity=line.quantity,
                     price_cents=price_of[line.product_id]) for line in body.lines]
    total = sum(line.quantity * line.price_cents for line in lines)
    if log.isEnabledFor(logging.INFO):
        log.info(
            "%-12s order=%s accepted for %s: %d line(s), %d cents → %s %s",
            "api", order_id, customer_id, len(lines), total, keys.ORDERS_CREATED, entry_id,
            extra={"order_id": order_id, "stream": keys.ORDERS_CREATED, "entry_id": entry_id},
        )
    created = HistoryEntry(type="order.created", at=header.occurred_at,
                           stream=keys.ORDERS_CREATED, entry_id=entry_id,
                           event_id=header.event_id)
    return OrderOut(
        id=order_id, customer_id=customer_id, status="pending", reason="",
        total_cents=total, lines=lines, created_at=header.occurred_at,
        updated_at=header.occurred_at, history=[created],
    ), False


async def get(r: redis.asyncio.Redis, order_id: str) -> OrderOut:
    async with r.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.order(order_id))
        pipe.hvals(keys.order_history(order_id))
        record, history = await pipe.execute()
    if not record:
        raise NotFound(f"order {order_id!r} not found")
    entries = sorted((json.loads(h) for h in history), key=lambda h: (h["at"], h["entry_id"]))
    return OrderOut(**_summary(record), history=entries)


async def page(
    r: redis.asyncio.Redis,
    customer_id: str | None,
    status: str | None,
    offset: int,
    limit: int,
) -> OrderPage:
    """Newest first, filtered by customer and status."""
    if customer_id and status:
        scored = await r.zinter(
            [keys.customer_orders(customer_id), keys.orders_by_status(status)], withscores=True
        )
        ordered = [order_id for order_id, _ in sorted(scored, key=lambda p: p[1], reverse=True)]
        total, ids = len(ordered), ordered[offset : offset + limit]
    else:
        index = (
            keys.customer_orders(customer_id) if customer_id
            else keys.orders_by_status(status) if status
            else keys.orders_index()
        )
        async with r.pipeline(transaction=False) as pipe:
            pipe.zcard(index)
            pipe.zrevrange(index, offset, offset + limit - 1)
            total, ids = await pipe.execute()
    async with r.pipeline(transaction=False) as pipe:
        for order_id in ids:
            pipe.hgetall(keys.order(order_id))
        records = await pipe.execute()
    items = [OrderSummary(**_summary(rec)) for rec in records if rec]
    more = offset + limit < total
    return OrderPage(
        items=items, total=total, offset=offset, limit=limit,
        next_offset=offset + limit if more else None,
    )


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

