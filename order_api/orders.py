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
import secrets
import time
from typing import Any

import redis.asyncio

from order_api import catalog
from order_api.errors import NotFound, Unprocessable
from order_api.schemas import (
    FINAL_STATUSES,
    HistoryEntry,
    OrderIn,
    OrderOut,
    OrderPage,
    OrderSummary,
)
from streams import keys
from streams.envelope import Envelope
from streams.events import OrderCreated, OrderLine
from streams.scripts import Script, evaluate, pairs

STATUSES = ("pending", "paid", "failed", "completed", "rejected", "refunded")
# A status only ever moves to a higher rank. `failed` ranks below the other
# final statuses so that a dead letter replayed successfully can still finish
# its order; a late event never moves an order back.
RANK = {"pending": 0, "paid": 1, "failed": 2, "completed": 3, "rejected": 3, "refunded": 3}
FINAL = FINAL_STATUSES

log = logging.getLogger(__name__)

CREATE = Script(
    "create_order",
    """
-- KEYS: order, history, all orders, customer's orders, pending orders, orders.created,
--       and, when the request has an Idempotency-Key, its record
-- ARGV: order id, created ms, body digest, key ttl, n, then the order's n field/value
--       arguments, then the envelope's field/value arguments
local n = tonumber(ARGV[5])
local idempotent = #KEYS == 7
if idempotent then
  local prior = redis.call('HMGET', KEYS[7], 'order_id', 'digest')
  if prior[1] then
    return {prior[2] == ARGV[3] and 'replayed' or 'mismatch', prior[1]}
  end
end
local order, event = {}, {}
for i = 6, 5 + n do order[#order + 1] = ARGV[i] end
for i = 6 + n, #ARGV do event[#event + 1] = ARGV[i] end
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('order id taken') end
local entry = redis.call('XADD', KEYS[6], '*', unpack(event))
redis.call('HSET', KEYS[1], unpack(order))
local fields = {}
for i = 1, #event, 2 do fields[event[i]] = event[i + 1] end
redis.call('HSET', KEYS[2], fields['event_id'], cjson.encode({
  event_id = fields['event_id'], type = fields['type'], at = fields['occurred_at'],
  stream = KEYS[6], entry_id = entry}))
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[1])
if idempotent then
  redis.call('HSET', KEYS[7], 'order_id', ARGV[1], 'digest', ARGV[3])
  redis.call('EXPIRE', KEYS[7], ARGV[4])
end
return {'created', entry}
""",
)

# How long an Idempotency-Key names its order (the API's IDEMPOTENCY_TTL_S).
IDEMPOTENCY_TTL_S = 24 * 3600


def new_order_id() -> str:
    return "ord_" + secrets.token_hex(8)


async def place(
    r: redis.asyncio.Redis,
    body: OrderIn,
    idempotency_key: str | None = None,
    idempotency_ttl_s: int = IDEMPOTENCY_TTL_S,
) -> tuple[OrderOut, bool]:
    """Validate against the catalog, capture prices, write the order pending
    together with its ``order.created`` event. With an ``idempotency_key``, a
    request repeated within the TTL (even concurrently) gets the order the
    first one placed: returns (order, True) then."""
    product_ids = list(dict.fromkeys(line.product_id for line in body.lines))
    customer_exists, price_of = await catalog.prices(r, body.customer_id, product_ids)
    if not customer_exists:
        raise Unprocessable(f"customer_id: customer {body.customer_id!r} does not exist")
    unknown = [p for p, price in price_of.items() if price is None]
    if unknown:
        raise Unprocessable(f"lines: unknown product(s): {', '.join(map(repr, unknown))}")
    lines = [
        OrderLine(product_id=line.product_id, quantity=line.quantity,
                  price_cents=price_of[line.product_id] or 0)
        for line in body.lines
    ]
    total = sum(line.quantity * line.price_cents for line in lines)
    order_id = new_order_id()
    event = Envelope.new(
        OrderCreated(customer_id=body.customer_id, lines=lines, total_cents=total), order_id
    )
    created_at = event.occurred_at
    record = {
        "id": order_id,
        "customer_id": body.customer_id,
        "lines": json.dumps([line.model_dump() for line in lines]),
        "total_cents": str(total),
        "status": "pending",
        "reason": "",
        "created_at": created_at,
        "updated_at": created_at,
    }
    created_ms = str(int(time.time() * 1000))
    order_args = pairs(record | {"created_ms": created_ms})
    script_keys = [
        keys.order(order_id),
        keys.order_history(order_id),
        keys.orders_index(),
        keys.customer_orders(body.customer_id),
        keys.orders_by_status("pending"),
        keys.ORDERS_CREATED,
    ]
    digest = ""
    if idempotency_key is not None:
        script_keys.append(keys.idempotency(idempotency_key))
        digest = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    outcome, value = await evaluate(
        r,
        CREATE,
        script_keys,
        [order_id, created_ms, digest, idempotency_ttl_s, len(order_args), *order_args,
         *pairs(event.to_fields())],
    )
    if outcome == "mismatch":
        raise Unprocessable(
            f"Idempotency-Key {idempotency_key!r} was already used for a different order "
            "body; send a new key for a new order"
        )
    if outcome == "replayed":
        log.info("%-12s order=%s repeated request (Idempotency-Key %s): same order",
                 "api", value, idempotency_key, extra={"order_id": value})
        return await get(r, value), True
    entry_id = value
    log.info(
        "%-12s order=%s accepted for %s: %d line(s), %d cents → %s %s",
        "api", order_id, body.customer_id, len(lines), total, keys.ORDERS_CREATED, entry_id,
        extra={"order_id": order_id, "stream": keys.ORDERS_CREATED, "entry_id": entry_id},
    )
    created = HistoryEntry(type=event.type, at=created_at, stream=keys.ORDERS_CREATED,
                           entry_id=entry_id, event_id=event.event_id)
    return OrderOut(**_summary(record), history=[created]), False


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

