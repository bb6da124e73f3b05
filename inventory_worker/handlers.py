"""What the inventory worker does with each event it reads.

All or nothing: the step checks every line before it takes any stock, so
stock never goes negative and a short line takes nothing.
"""

from __future__ import annotations

from collections import Counter

from streams import keys
from streams.envelope import Envelope, Header
from streams.events import InventoryReserved, PaymentCompleted
from streams.outcomes import Apply
from streams.scripts import Step

RESERVE = Step(
    "reserve",
    """
-- K: reservation record, inventory.reserved, inventory.rejected, order, then one product
--    per line
-- A: reserved data, customer id, then product id and quantity per line
if redis.call('EXISTS', K[1]) == 1 then
  return {'duplicate', redis.call('HGET', K[1], 'status')}
end
if redis.call('EXISTS', K[4]) == 0 then  -- an event nobody accepted: take nothing
  return {'dead_letter', 'order does not exist; no stock taken'}
end
local lines = (#A - 2) / 2
for i = 1, lines do
  local product, quantity = A[1 + 2 * i], A[2 + 2 * i]
  local stock = redis.call('HGET', K[4 + i], 'stock')
  if not stock or tonumber(stock) < tonumber(quantity) then
    local reason = stock and 'out_of_stock' or 'unknown_product'
    local available = stock or '0'
    redis.call('HSET', K[1], 'status', 'rejected', 'reason', reason, 'product_id', product)
    local data = '{"customer_id":' .. cjson.encode(A[2]) .. ',"reason":"' .. reason ..
                 '","product_id":' .. cjson.encode(product) .. ',"requested":' .. quantity ..
                 ',"available":' .. available .. '}'
    return {'rejected', reason, product, quantity, available,
            publish(K[3], 'inventory.rejected', data)}
  end
end
for i = 1, lines do
  redis.call('HINCRBY', K[4 + i], 'stock', '-' .. A[2 + 2 * i])
end
redis.call('HSET', K[1], 'status', 'reserved')
return {'reserved', tostring(lines), publish(K[2], 'inventory.reserved', A[1])}
""",
)


def reserve(event: Envelope) -> Apply:
    """payment.completed: take the stock for every line, or reject the order."""
    paid = event.payload
    assert isinstance(paid, PaymentCompleted)
    # The same product on two lines is taken once, for the sum.
    wanted = Counter[str]()
    for line in paid.lines:
        wanted[line.product_id] += line.quantity
    products = sorted(wanted)
    return Apply(
        RESERVE,
        keys=[
            keys.reservation(event.order_id),
            keys.INVENTORY_RESERVED,
            keys.INVENTORY_REJECTED,
            keys.order(event.order_id),
            *(keys.product(p) for p in products),
        ],
        args=[
            InventoryReserved(lines=paid.lines).model_dump_json(),
            paid.customer_id,
            *(part for p in products for part in (p, wanted[p])),
        ],
        header=Header.new(event.order_id, causation_id=event.event_id),
        describe=describe,
    )


def describe(result: list) -> str:
    match result:
        case ["reserved", lines, _entry]:
            return f"took stock for {lines} product(s) → {keys.INVENTORY_RESERVED}"
        case ["rejected", "unknown_product", product, quantity, _, _entry]:
            return (
                f"rejected: unknown product {product} (wanted {quantity})"
                f" → {keys.INVENTORY_REJECTED}"
            )
        case ["rejected", _reason, product, quantity, available, _entry]:
            return (
                f"rejected: {product} out of stock (wanted {quantity}, {available} left)"
                f" → {keys.INVENTORY_REJECTED}"
            )
        case ["duplicate", status]:
            return f"already {status}: duplicate delivery, nothing changed"
    return f"unexpected result {result!r}"


HANDLERS = {"payment.completed": reserve}
