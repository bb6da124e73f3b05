"""The invariants of DESIGN.md, checked against what is in Redis."""

from __future__ import annotations

import json
from collections import Counter

import redis

from order_api.orders import FINAL
from streams import keys


def check(
    r: redis.Redis,
    initial_stock: dict[str, int],
    initial_balance: dict[str, int],
    *,
    expect_dead_letters: bool = False,
) -> dict[str, int]:
    """Assert every invariant; return the count of orders per final status."""
    created = {f["order_id"]: f for _, f in r.xrange(keys.ORDERS_CREATED)}
    order_ids = set(r.zrange(keys.orders_index(), 0, -1))
    # The order record and its order.created event exist together or not at all.
    assert order_ids == set(created), "orders without their event, or events without an order"
    records = {oid: r.hgetall(keys.order(oid)) for oid in order_ids}
    assert all(records.values()), "an indexed order has no record"

    def per_order(stream: str) -> Counter[str]:
        return Counter(f["order_id"] for _, f in r.xrange(stream))

    charged, refunded = per_order(keys.PAYMENTS_COMPLETED), per_order(keys.PAYMENTS_REFUNDED)
    declined, reserved = per_order(keys.PAYMENTS_FAILED), per_order(keys.INVENTORY_RESERVED)
    rejected = per_order(keys.INVENTORY_REJECTED)
    # Each order is charged at most once and refunded at most once; refunded only if charged.
    assert max(charged.values(), default=0) <= 1, "an order was charged twice"
    assert max(refunded.values(), default=0) <= 1, "an order was refunded twice"
    assert set(refunded) <= set(charged), "a refund without a charge"
    assert max(reserved.values(), default=0) <= 1, "stock was taken twice for an order"

    # Every accepted order reaches exactly one final status, the one its events say.
    statuses = Counter()
    for oid, record in records.items():
        status = record["status"]
        assert status in FINAL, f"order {oid} is still {status}"
        statuses[status] += 1
        expected = {
            "completed": charged[oid] and reserved[oid] and not refunded[oid],
            "refunded": charged[oid] and rejected[oid] and refunded[oid],
            "rejected": declined[oid] and not charged[oid],
            "failed": True,
        }[status]
        assert expected, f"order {oid} is {status} but its events say otherwise"

    # Stock never negative; initial = current + units taken by completed orders.
    taken: Counter[str] = Counter()
    for record in records.values():
        if record["status"] == "completed":
            for line in json.loads(record["lines"]):
                taken[line["product_id"]] += line["quantity"]
    for product, initial in initial_stock.items():
        stock = int(r.hget(keys.product(product), keys.STOCK_FIELD))
        assert stock >= 0, f"{product} stock is negative: {stock}"
        assert initial == stock + taken[product], (
            f"{product}: initial {initial} != stock {stock} + taken {taken[product]}"
        )

    # Every customer: initial balance = balance + charges - refunds.
    charges: Counter[str] = Counter()
    refunds: Counter[str] = Counter()
    for _, f in r.xrange(keys.PAYMENTS_COMPLETED):
        charges[json.loads(f["data"])["customer_id"]] += json.loads(f["data"])["amount_cents"]
    for _, f in r.xrange(keys.PAYMENTS_REFUNDED):
        refunds[json.loads(f["data"])["customer_id"]] += json.loads(f["data"])["amount_cents"]
    for customer, initial in initial_balance.items():
        balance = int(r.hget(keys.customer(customer), keys.BALANCE_FIELD))
        assert balance >= 0, f"{customer} balance is negative"
        assert initial == balance + charges[customer] - refunds[customer], (
            f"{customer}: {initial} != {balance} + {charges[customer]} - {refunds[customer]}"
        )

    # Every message is acknowledged or dead-lettered: nothing pending, nothing unread.
    for stream in keys.ALL_STREAMS:
        if r.exists(stream):
            for group in r.xinfo_groups(stream):
                assert group["pending"] == 0, f"{stream}/{group['name']}: pending entries"
                assert not group.get("lag"), f"{stream}/{group['name']}: unread entries"
    if not expect_dead_letters:
        for stream in keys.ALL_STREAMS:
            assert r.xlen(keys.dead(stream)) == 0, f"unexpected dead letters in {stream}.dead"
    return dict(statuses)
