"""The invariants of DESIGN.md, checked against what is in Redis.

The books are the workers' own records (``keys.payment``, ``keys.reservation``)
and the balances and stock they changed; a double effect shows up as a
balance or stock that the records do not explain. The streams are also
counted, event by event, when none of them has been trimmed.
"""

from __future__ import annotations

import json
from collections import Counter

import redis

from shop import keys, topology
from shop.statuses import FINAL_STATUSES
from streams.topology import dead as dead_of


def check(
    r: redis.Redis,
    initial_stock: dict[str, int],
    initial_balance: dict[str, int],
    *,
    expect_dead_letters: bool = False,
) -> dict[str, int]:
    """Assert every invariant; return the count of orders per final status."""
    order_ids = r.zrange(keys.orders_index(), 0, -1)
    records = _all(r, [keys.order(o) for o in order_ids])
    payments = dict(zip(order_ids, _all(r, [keys.payment(o) for o in order_ids]), strict=True))
    reservations = dict(
        zip(order_ids, _all(r, [keys.reservation(o) for o in order_ids]), strict=True)
    )
    histories = _all(r, [keys.order_history(o) for o in order_ids])
    assert all(records), "an indexed order has no record"

    # The order record and its order.created event exist together or not at all.
    for oid, history in zip(order_ids, histories, strict=True):
        types = [json.loads(h)["type"] for h in history.values()]
        assert "order.created" in types, f"order {oid} has no order.created event"
    created = {f["order_id"] for _, f in r.xrange(topology.ORDERS_CREATED)}
    assert created <= set(order_ids), "an order.created event without its order"
    # Nothing was charged or taken for an order that does not exist.
    known = set(order_ids)
    for pattern in (keys.payment("*"), keys.reservation("*")):
        for key in r.scan_iter(pattern, count=1000):
            assert key.rsplit(":", 1)[1] in known, f"{key}: a record for no order"

    # Every accepted order reaches exactly one final status, the one its records say.
    statuses: Counter[str] = Counter()
    for oid, record in zip(order_ids, records, strict=True):
        status, paid, took = (
            record["status"], payments[oid].get("status"), reservations[oid].get("status")
        )
        assert status in FINAL_STATUSES, f"order {oid} is still {status}"
        statuses[status] += 1
        expected = {
            "completed": paid == "charged" and took == "reserved",
            "refunded": paid == "refunded" and took == "rejected",
            "rejected": paid == "declined" and took is None,
            "failed": not (paid == "charged" and took == "reserved"),
        }[status]
        assert expected, f"order {oid} is {status} but payment={paid}, stock={took}"

    # Stock never negative; initial = current + units taken by completed orders.
    taken: Counter[str] = Counter()
    for oid, record in zip(order_ids, records, strict=True):
        if reservations[oid].get("status") == "reserved":
            assert record["status"] in ("completed", "failed"), f"{oid}: stock taken, not done"
            for line in json.loads(record["lines"]):
                taken[line["product_id"]] += line["quantity"]
    for product, initial in initial_stock.items():
        stock = int(r.hget(keys.product(product), keys.STOCK_FIELD))
        assert stock >= 0, f"{product} stock is negative: {stock}"
        assert initial == stock + taken[product], (
            f"{product}: initial {initial} != stock {stock} + taken {taken[product]}"
        )

    # Every customer: initial balance = balance + charges - refunds.
    kept: Counter[str] = Counter()
    for payment in payments.values():
        if payment.get("status") == "charged":
            kept[payment["customer_id"]] += int(payment["amount_cents"])
    for customer, initial in initial_balance.items():
        balance = int(r.hget(keys.customer(customer), keys.BALANCE_FIELD))
        assert balance >= 0, f"{customer} balance is negative"
        assert initial == balance + kept[customer], (
            f"{customer}: initial {initial} != balance {balance} + charges kept {kept[customer]}"
        )

    if not _trimmed(r):
        _check_events(r, set(order_ids))

    # Every message is acknowledged or dead-lettered: nothing pending, nothing unread.
    for stream in (*topology.SHOP.streams, *map(dead_of, topology.SHOP.streams)):
        if not r.exists(stream):
            continue
        last = r.xinfo_stream(stream)["last-generated-id"]
        for group in r.xinfo_groups(stream):
            where = f"{stream}/{group['name']}"
            assert group["pending"] == 0, f"{where}: {group['pending']} pending entries"
            assert group["last-delivered-id"] == last, f"{where}: unread entries"
    if not expect_dead_letters:
        for stream in topology.SHOP.streams:
            assert r.xlen(dead_of(stream)) == 0, f"unexpected dead letters in {stream}.dead"
    return dict(statuses)


def _all(r: redis.Redis, hashes: list[str]) -> list[dict[str, str]]:
    with r.pipeline(transaction=False) as pipe:
        for key in hashes:
            pipe.hgetall(key)
        return pipe.execute()


def _trimmed(r: redis.Redis) -> bool:
    for stream in topology.SHOP.streams:
        if r.exists(stream):
            info = r.xinfo_stream(stream)
            if info["entries-added"] != info["length"]:
                return True
    return False


def _check_events(r: redis.Redis, orders: set[str]) -> None:
    """With every event still in the streams: count them per order."""
    def per_order(stream: str) -> Counter[str]:
        return Counter(f["order_id"] for _, f in r.xrange(stream) if f.get("order_id") in orders)

    assert set(per_order(topology.ORDERS_CREATED)) == orders, "orders without their event"
    charged, refunded = per_order(topology.PAYMENTS_COMPLETED), per_order(topology.PAYMENTS_REFUNDED)
    reserved = per_order(topology.INVENTORY_RESERVED)
    # Each order is charged at most once and refunded at most once; refunded only if charged.
    assert max(charged.values(), default=0) <= 1, "an order was charged twice"
    assert max(refunded.values(), default=0) <= 1, "an order was refunded twice"
    assert set(refunded) <= set(charged), "a refund without a charge"
    assert max(reserved.values(), default=0) <= 1, "stock was taken twice for an order"
