"""What the order status projector does: group ``order-status`` reads every
stream and moves each order's status and history.

Idempotent and monotonic in one Lua step, in the order's partition: the
history is a hash keyed by event id (HSETNX: a duplicate finds its entry and
changes nothing), and the status only moves to a higher rank
(``shop.statuses``), so events arriving out of order across streams never
move an order back.
"""

from __future__ import annotations

from shop import keys
from shop.events import InventoryRejected, PaymentFailed, PaymentRefunded
from shop.statuses import DONE_RANK, STATUSES, lua_ranks
from shop.topology import ORDER_STATUS_GROUP, SHOP
from status_projector.metrics import settle_time
from streams.consumer import Handler
from streams.deadletter import DEAD_LETTER_TYPE, DeadLetter
from streams.envelope import Envelope, utc_stamp
from streams.outcomes import Ack, Apply, Outcome
from streams.scripts import Step
from streams.worker import Registration

# A Lua table literal, built once into the script: each status's index's key
# (K[3] for the first of STATUSES, and so on).
_LUA_INDEXES = ", ".join(f"{status} = K[{i}]" for i, status in enumerate(STATUSES, 3))

PROJECT = Step(
    "project",
    f"""
-- K: order, history, then the index of each status (in the order of STATUSES)
-- A: event id, event type, occurred at, new status, reason, now, order id, now in ms
local RANK = {lua_ranks()}
local INDEX = {{{_LUA_INDEXES}}}
local order = redis.call('HMGET', K[1], 'status', 'created_ms')
local current, created_ms, new = order[1], order[2], A[4]
if not current then
  return {{'dead_letter', 'order ' .. A[7] .. ' does not exist'}}
end
local entry = cjson.encode({{event_id = A[1], type = A[2], at = A[3], stream = input,
                             entry_id = entry_id}})
if redis.call('HSETNX', K[2], A[1], entry) == 0 then
  return {{'duplicate', current}}
end
if RANK[new] > RANK[current] then
  -- updated_ms: when the status moved, in ms (what the benchmark reads)
  redis.call('HSET', K[1], 'status', new, 'reason', A[5], 'updated_at', A[6],
             'updated_ms', A[8])
  redis.call('ZREM', INDEX[current], A[7])
  redis.call('ZADD', INDEX[new], created_ms, A[7])
  -- and how long the order took to get here from its POST, in ms
  return {{'moved', current, new, tonumber(A[8]) - tonumber(created_ms)}}
end
if new == current and RANK[new] < {DONE_RANK} and A[5] ~= '' then
  redis.call('HSET', K[1], 'reason', A[5], 'updated_at', A[6])
  return {{'noted', current, A[5]}}
end
return {{'kept', current, new}}
""",
    publishes=False,
)


def target(event: Envelope) -> tuple[str, str]:
    """The status (and reason) an event asks for."""
    payload = event.payload
    match event.type:
        case "order.created":
            return "pending", ""
        case "payment.completed":
            return "paid", ""
        case "payment.failed":
            assert isinstance(payload, PaymentFailed)
            return "rejected", f"payment declined: {payload.reason.replace('_', ' ')}"
        case "inventory.reserved":
            return "completed", ""
        case "inventory.rejected":
            assert isinstance(payload, InventoryRejected)
            return "paid", (
                f"{payload.reason.replace('_', ' ')}: {payload.product_id} (requested "
                f"{payload.requested}, available {payload.available}); refund pending"
            )
        case "payment.refunded":
            assert isinstance(payload, PaymentRefunded)
            return "refunded", f"refunded: {payload.reason}"
    raise ValueError(f"no status for event type {event.type!r}")


def _apply(order_id: str, tag: str, event_id: str, event_type: str, at: str, status: str,
           reason: str) -> Apply:
    now_ms, now = utc_stamp()
    return Apply(
        PROJECT,
        keys=[keys.order(order_id, tag), keys.order_history(order_id, tag),
              *(keys.orders_by_status(s, tag) for s in STATUSES)],
        args=[event_id, event_type, at, status, reason, now, order_id, now_ms],
        describe=describe,
    )


def created(event: Envelope) -> Outcome:
    """order.created: the API wrote the order pending and its first history entry
    in the same script as this event; there is nothing left to record."""
    return Ack("pending, recorded with the order by the API")


def project(event: Envelope) -> Outcome:
    """Any event of the flow: record it in the order's history, move its status."""
    status, reason = target(event)
    return _apply(event.subject, event.tag, event.event_id, event.type, event.occurred_at,
                  status, reason)


def fail(dead: DeadLetter) -> Outcome:
    """A dead letter of the saga's: the order it names cannot go on; it shows
    ``failed``. A subscriber's (a gateway's) says only that the subscriber
    could not handle the event: the order goes on."""
    if not dead.subject:
        return Ack(f"dead letter from {dead.stream} names no order: nothing to project")
    if dead.group not in SHOP.groups():
        return Ack(f"dead letter of {dead.group}, not of the saga: the order goes on")
    stage = dead.group
    return _apply(
        dead.subject,
        SHOP.split(dead.stream)[1],  # the partition of the stream it came from
        f"dead:{dead.group}:{dead.stream}:{dead.entry_id}",
        DEAD_LETTER_TYPE,
        dead.failed_at,
        "failed",
        f"{stage} stage: {dead.reason}",
    )


def describe(result: list) -> str:
    match result:
        case ["moved", current, new, *_]:
            return f"status {current} → {new}"
        case ["noted", current, reason]:
            return f"status stays {current}: {reason}"
        case ["kept", current, new]:
            return f"status stays {current} (a late event asked for {new})"
        case ["duplicate", current]:
            return f"already recorded (status {current}): nothing changed"
    return f"unexpected result {result!r}"


HANDLERS: dict[str, Handler] = {
    **{event.name: project for event in SHOP.events},
    "order.created": created,
    DEAD_LETTER_TYPE: fail,
}

WORKER = Registration(SHOP, ORDER_STATUS_GROUP, HANDLERS, metrics=(settle_time,))
