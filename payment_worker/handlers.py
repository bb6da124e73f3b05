"""What the payment worker does with each event it reads.

Each handler returns one atomic Lua step, in the order's partition (the
customer's: its tag is the input stream's). The step's first act is to look
for this worker's record of the order (``keys.payment``): if the order was
already handled, a second delivery changes nothing.
"""

from __future__ import annotations

from shop import keys
from shop.events import InventoryRejected, OrderCreated, PaymentCompleted
from shop.topology import (
    PAYMENT_GROUP,
    PAYMENTS_COMPLETED,
    PAYMENTS_FAILED,
    PAYMENTS_REFUNDED,
    SHOP,
)
from streams.envelope import Envelope, Header
from streams.outcomes import Apply
from streams.scripts import Step
from streams.worker import Registration

CHARGE = Step(
    "charge",
    """
-- K: payment record, customer, payments.completed, payments.failed, order
-- A: amount, customer id, completed data
local function declined(reason)  -- payment.failed's data (events.PaymentFailed)
  return cjson.encode({customer_id = A[2], amount_cents = tonumber(A[1]), reason = reason})
end
local done = guard(K[1], K[5], 'order does not exist; nothing charged')
if done then return done end
local customer = redis.call('HMGET', K[2], 'balance_cents', 'name')
local balance, name = customer[1], customer[2] or A[2]
if not balance then
  redis.call('HSET', K[1], 'status', 'declined', 'reason', 'unknown_customer',
             'customer_id', A[2], 'amount_cents', A[1])
  return {'declined', 'unknown_customer', A[1], A[2], '0',
          publish(K[4], 'payment.failed', declined('unknown_customer'))}
end
if tonumber(balance) < tonumber(A[1]) then
  redis.call('HSET', K[1], 'status', 'declined', 'reason', 'insufficient_funds',
             'customer_id', A[2], 'amount_cents', A[1])
  return {'declined', 'insufficient_funds', A[1], name, balance,
          publish(K[4], 'payment.failed', declined('insufficient_funds'))}
end
local left = redis.call('HINCRBY', K[2], 'balance_cents', '-' .. A[1])
redis.call('HSET', K[1], 'status', 'charged', 'customer_id', A[2], 'amount_cents', A[1])
return {'charged', A[1], name, left, publish(K[3], 'payment.completed', A[3])}
""",
)

REFUND = Step(
    "refund",
    """
-- K: payment record, customer, payments.refunded
-- A: reason, customer id
local status = redis.call('HGET', K[1], 'status')
if status == 'refunded' then
  return {'duplicate', status}
end
if status ~= 'charged' then
  return {'dead_letter', 'nothing to refund: the order was never charged (payment: ' ..
          (status or 'none') .. ')'}
end
if redis.call('HGET', K[1], 'customer_id') ~= A[2] then
  return {'dead_letter', 'refund names customer ' .. A[2] .. ' but the charge was to ' ..
          redis.call('HGET', K[1], 'customer_id')}
end
local amount = redis.call('HGET', K[1], 'amount_cents')
local balance = redis.call('HINCRBY', K[2], 'balance_cents', amount)
redis.call('HSET', K[1], 'status', 'refunded', 'refund_reason', A[1])
local name = redis.call('HGET', K[2], 'name') or A[2]
local data = '{"customer_id":' .. cjson.encode(A[2]) .. ',"amount_cents":' .. amount ..
             ',"reason":' .. cjson.encode(A[1]) .. '}'
return {'refunded', amount, name, balance, publish(K[3], 'payment.refunded', data)}
""",
)


def charge(event: Envelope) -> Apply:
    """order.created: charge the order total, or decline it."""
    order, order_id, tag = event.payload, event.subject, event.tag
    assert isinstance(order, OrderCreated)
    amount, customer = order.total_cents, order.customer_id
    completed = PaymentCompleted(customer_id=customer, amount_cents=amount, lines=order.lines)
    return Apply(
        CHARGE,
        keys=[
            keys.payment(order_id, tag),
            keys.customer(customer, tag),
            SHOP.stream(PAYMENTS_COMPLETED, tag),
            SHOP.stream(PAYMENTS_FAILED, tag),
            keys.order(order_id, tag),
        ],
        # A decline's PaymentFailed is written by the step itself, only when it happens.
        args=[amount, customer, completed.model_dump_json()],
        header=Header.new(order_id, causation_id=event.event_id),
        describe=describe,
    )


def refund(event: Envelope) -> Apply:
    """inventory.rejected: return the charge, once."""
    rejected, order_id, tag = event.payload, event.subject, event.tag
    assert isinstance(rejected, InventoryRejected)
    reason = (
        f"{rejected.reason.replace('_', ' ')}: {rejected.product_id} "
        f"(requested {rejected.requested}, available {rejected.available})"
    )
    return Apply(
        REFUND,
        keys=[
            keys.payment(order_id, tag),
            keys.customer(rejected.customer_id, tag),
            SHOP.stream(PAYMENTS_REFUNDED, tag),
        ],
        args=[reason, rejected.customer_id],
        header=Header.new(order_id, causation_id=event.event_id),
        describe=describe,
    )


def describe(result: list) -> str:
    """The log line's end for a charge or refund step's result."""
    match result:
        case ["charged", amount, name, left, _entry]:
            return f"charged {amount} ({name} {left} left) → {PAYMENTS_COMPLETED}"
        case ["declined", "unknown_customer", amount, customer, _, _entry]:
            return f"declined {amount}: unknown customer {customer} → {PAYMENTS_FAILED}"
        case ["declined", reason, amount, name, balance, _entry]:
            return (
                f"declined {amount}: {reason.replace('_', ' ')} ({name} has {balance})"
                f" → {PAYMENTS_FAILED}"
            )
        case ["refunded", amount, name, balance, _entry]:
            return f"refunded {amount} ({name} {balance} now) → {PAYMENTS_REFUNDED}"
        case ["duplicate", status]:
            return f"already {status}: duplicate delivery, nothing changed"
    return f"unexpected result {result!r}"


WORKER = Registration(SHOP, PAYMENT_GROUP, {"order.created": charge, "inventory.rejected": refund})
