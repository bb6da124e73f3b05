"""What the payment worker does with each event it reads.

Each handler returns one atomic Lua step. The step's first act is to look for
this worker's record of the order (``keys.payment``): if the order was
already handled, a second delivery changes nothing.
"""

from __future__ import annotations

from streams import keys
from streams.envelope import Envelope, Header
from streams.events import InventoryRejected, OrderCreated, PaymentCompleted
from streams.outcomes import Apply
from streams.scripts import Step

CHARGE = Step(
    "charge",
    """
-- K: payment record, customer, payments.completed, payments.failed, order
-- A: amount, customer id, completed data
local function declined(reason)  -- payment.failed's data (events.PaymentFailed)
  return cjson.encode({customer_id = A[2], amount_cents = tonumber(A[1]), reason = reason})
end
if redis.call('EXISTS', K[1]) == 1 then
  return {'duplicate', redis.call('HGET', K[1], 'status')}
end
if redis.call('EXISTS', K[5]) == 0 then  -- an event nobody accepted: charge nothing
  return {'dead_letter', 'order does not exist; nothing charged'}
end
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
    order = event.payload
    assert isinstance(order, OrderCreated)
    amount, customer = order.total_cents, order.customer_id
    completed = PaymentCompleted(customer_id=customer, amount_cents=amount, lines=order.lines)
    return Apply(
        CHARGE,
        keys=[
            keys.payment(event.order_id),
            keys.customer(customer),
            keys.PAYMENTS_COMPLETED,
            keys.PAYMENTS_FAILED,
            keys.order(event.order_id),
        ],
        # A decline's PaymentFailed is written by the step itself, only when it happens.
        args=[amount, customer, completed.model_dump_json()],
        header=Header.new(event.order_id, causation_id=event.event_id),
        describe=describe,
    )


def refund(event: Envelope) -> Apply:
    """inventory.rejected: return the charge, once."""
    rejected = event.payload
    assert isinstance(rejected, InventoryRejected)
    reason = (
        f"{rejected.reason.replace('_', ' ')}: {rejected.product_id} "
        f"(requested {rejected.requested}, available {rejected.available})"
    )
    return Apply(
        REFUND,
        keys=[
            keys.payment(event.order_id),
            keys.customer(rejected.customer_id),
            keys.PAYMENTS_REFUNDED,
        ],
        args=[reason, rejected.customer_id],
        header=Header.new(event.order_id, causation_id=event.event_id),
        describe=describe,
    )


def describe(result: list) -> str:
    """The log line's end for a charge or refund step's result."""
    match result:
        case ["charged", amount, name, left, _entry]:
            return f"charged {amount} ({name} {left} left) → {keys.PAYMENTS_COMPLETED}"
        case ["declined", "unknown_customer", amount, customer, _, _entry]:
            return f"declined {amount}: unknown customer {customer} → {keys.PAYMENTS_FAILED}"
        case ["declined", reason, amount, name, balance, _entry]:
            return (
                f"declined {amount}: {reason.replace('_', ' ')} ({name} has {balance})"
                f" → {keys.PAYMENTS_FAILED}"
            )
        case ["refunded", amount, name, balance, _entry]:
            return f"refunded {amount} ({name} {balance} now) → {keys.PAYMENTS_REFUNDED}"
        case ["duplicate", status]:
            return f"already {status}: duplicate delivery, nothing changed"
    return f"unexpected result {result!r}"


HANDLERS = {"order.created": charge, "inventory.rejected": refund}
