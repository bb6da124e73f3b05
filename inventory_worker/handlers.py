"""What the inventory worker does with each event it reads.

An order's lines may name products in different slots (on Redis Cluster,
different machines), so taking its stock is not one atomic step but a chain
of them, each idempotent, each in one slot:

1. **check**, in the order's partition: the order exists (else nothing is
   taken and the message is dead-lettered) and is not decided yet.
2. **take**, product by product in a fixed order, each atomic in the
   product's slot and recorded under (order, product) (``keys.take``): a
   second run finds the record and takes nothing. It stops at the first
   product short of stock (or unknown).
3. **give back**, when a product was short: every product of the order, each
   atomic in its slot. A take is returned once; a product never taken is
   marked so that a late run of step 2 (a consumer that was merely slow) can
   no longer take it.
4. **conclude**, in the order's partition: the decision (``keys.reservation``),
   the outcome event and the acknowledgement, in one step. Once written, a
   redelivery finds it and changes nothing.

A crash between any two steps leaves the message pending; whoever handles it
next runs the chain again, and every step finds what was done. Because each
take's record is kept, the decision never changes on a redelivery, even after
a restock in between: a product short once stays short for that order.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from shop import keys
from shop.events import InventoryRejected, InventoryReserved, PaymentCompleted
from shop.topology import INVENTORY_GROUP, INVENTORY_REJECTED, INVENTORY_RESERVED, SHOP
from streams.envelope import Envelope, Header
from streams.outcomes import Ack, Apply, Call, Chain, Outcome, Reject
from streams.scripts import Script, Step
from streams.worker import Registration

# KEYS: the decision, the order. Answers: 'go', the decision if made, or 'no_order'.
CHECK = Script(
    "inventory_check",
    """
local decided = redis.call('HGET', KEYS[1], 'status')
if decided then return {'decided', decided} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {'no_order'} end
return {'go'}
""",
)

# KEYS: product, take record. ARGV: quantity. Answers the record: status, available.
TAKE = Script(
    "inventory_take",
    """
local seen = redis.call('HMGET', KEYS[2], 'status', 'available')
if seen[1] then return seen end
local stock = redis.call('HGET', KEYS[1], 'stock')
local status = 'taken'
if not stock then status, stock = 'unknown', '0'
elseif tonumber(stock) < tonumber(ARGV[1]) then status = 'short'
else redis.call('HINCRBY', KEYS[1], 'stock', '-' .. ARGV[1]) end
redis.call('HSET', KEYS[2], 'status', status, 'quantity', ARGV[1], 'available', stock)
return {status, stock}
""",
)

# KEYS: product, take record. ARGV: quantity. Answers the record as it was:
# status ('void' when there was none), available.
GIVE_BACK = Script(
    "inventory_give_back",
    """
local seen = redis.call('HMGET', KEYS[2], 'status', 'available', 'quantity')
if not seen[1] then
  redis.call('HSET', KEYS[2], 'status', 'void', 'quantity', ARGV[1])
  return {'void', ''}
end
if seen[1] == 'taken' then
  if redis.call('EXISTS', KEYS[1]) == 1 then  -- a product deleted since keeps nothing
    redis.call('HINCRBY', KEYS[1], 'stock', seen[3])
  end
  redis.call('HSET', KEYS[2], 'status', 'returned')
end
return {seen[1], seen[2] or ''}
""",
)

CONCLUDE = Step(
    "inventory_conclude",
    """
-- K: decision, inventory.reserved, inventory.rejected, order
-- A: 'reserved' or 'rejected', the event's data, reason, product id
local done = guard(K[1], K[4], 'order does not exist')
if done then return done end
if A[1] == 'reserved' then
  redis.call('HSET', K[1], 'status', 'reserved')
  return {'reserved', publish(K[2], 'inventory.reserved', A[2])}
end
redis.call('HSET', K[1], 'status', 'rejected', 'reason', A[3], 'product_id', A[4])
return {'rejected', A[3], A[4], publish(K[3], 'inventory.rejected', A[2])}
""",
)


def reserve(event: Envelope) -> Outcome:
    """payment.completed: take the stock for every line, or none of it."""
    paid = event.payload
    assert isinstance(paid, PaymentCompleted)
    return _Reservation(event, paid).check()


class _Reservation:
    """The chain of steps for one order (see the module's docstring)."""

    def __init__(self, event: Envelope, paid: PaymentCompleted) -> None:
        self.event, self.paid = event, paid
        self.order_id, self.tag = event.subject, event.tag
        # The same product on two lines is taken once, for the sum.
        wanted = Counter[str]()
        for line in paid.lines:
            wanted[line.product_id] += line.quantity
        self.wanted = sorted(wanted.items())

    def check(self) -> Chain:
        decided = [keys.reservation(self.order_id, self.tag), keys.order(self.order_id, self.tag)]
        return Chain([Call(CHECK, decided, [])], lambda answers: self.checked(answers[0]))

    def checked(self, answer: list[str]) -> Outcome:
        match answer:
            case ["decided", decided]:
                return Ack(f"already {decided}: duplicate delivery, nothing changed",
                           duplicate=True)
            case ["no_order"]:
                return Reject("order does not exist; no stock taken")
        return self.take(0)

    def _keys(self, product: str) -> list[str]:
        return [keys.product(product), keys.take(product, self.order_id)]

    def take(self, i: int) -> Outcome:
        if i == len(self.wanted):
            return self.conclude("reserved", InventoryReserved(lines=self.paid.lines))
        product, quantity = self.wanted[i]
        return Chain([Call(TAKE, self._keys(product), [quantity])],
                     lambda answers: self.taken(i, answers[0]))

    def taken(self, i: int, answer: list[str]) -> Outcome:
        if answer[0] == "taken":
            return self.take(i + 1)
        calls = [Call(GIVE_BACK, self._keys(p), [q]) for p, q in self.wanted]
        return Chain(calls, self.given_back)

    def given_back(self, answers: list[Any]) -> Outcome:
        """Every take is back: reject for the first product short or unknown."""
        for (product, quantity), (status, available) in zip(self.wanted, answers, strict=True):
            if status in ("short", "unknown"):
                reason = "out_of_stock" if status == "short" else "unknown_product"
                return self.conclude("rejected", InventoryRejected(
                    customer_id=self.paid.customer_id, reason=reason, product_id=product,
                    requested=quantity, available=int(available or 0)))
        # Given back by a run that found the short product; it has concluded, or
        # will: this one waits for that (the message stays pending, retried).
        raise RuntimeError("stock was given back, but no product is short: a run that "
                           "found it has not concluded yet")

    def conclude(self, decision: str, outcome: InventoryReserved | InventoryRejected) -> Apply:
        tag = self.tag
        reason = product = ""
        if isinstance(outcome, InventoryRejected):
            reason, product = outcome.reason, outcome.product_id
        return Apply(
            CONCLUDE,
            keys=[keys.reservation(self.order_id, tag), SHOP.stream(INVENTORY_RESERVED, tag),
                  SHOP.stream(INVENTORY_REJECTED, tag), keys.order(self.order_id, tag)],
            args=[decision, outcome.model_dump_json(), reason, product],
            header=Header.new(self.order_id, causation_id=self.event.event_id),
            describe=lambda result: describe(result, outcome),
        )


def describe(result: list, outcome: InventoryReserved | InventoryRejected | None = None) -> str:
    match result, outcome:
        case ["reserved", _entry], InventoryReserved(lines=lines):
            return f"took stock for {len(lines)} line(s) → {INVENTORY_RESERVED}"
        case ["rejected", "unknown_product", product, _entry], InventoryRejected() as r:
            return (f"rejected: unknown product {product} (wanted {r.requested}); stock given "
                    f"back → {INVENTORY_REJECTED}")
        case ["rejected", _reason, product, _entry], InventoryRejected() as r:
            return (f"rejected: {product} out of stock (wanted {r.requested}, {r.available} "
                    f"left); stock given back → {INVENTORY_REJECTED}")
        case ["duplicate", status], _:
            return f"already {status}: duplicate delivery, nothing changed"
    return f"unexpected result {result!r}"


WORKER = Registration(SHOP, INVENTORY_GROUP, {"payment.completed": reserve})
