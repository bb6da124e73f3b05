"""The invariants (docs/architecture.md), checked against what is in Redis.

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
from shop.topology import customer_partition
from streams.topology import Topology


def check(
    r: redis.Redis,
    initial_stock: dict[str, int],
    initial_balance: dict[str, int],
    *,
    expect_dead_letters: bool = False,
    partitions: int = 1,
) -> dict[str, int]:
    """Assert every invariant, across every partition; return the count of
    orders per final status."""
    shop = topology.SHOP.with_partitions(partitions)
    order_ids = [o for tag in shop.tags() for o in r.zrange(keys.orders_index(tag), 0, -1)]
    tags = {o: shop.tag_of(o) for o in order_ids}
    records = _all(r, [keys.order(o, tags[o]) for o in order_ids])
    payments = dict(zip(order_ids, _all(r, [keys.payment(o, tags[o]) for o in order_ids]),
                        strict=True))
    reservations = dict(
        zip(order_ids, _all(r, [keys.reservation(o, tags[o]) for o in order_ids]), strict=True)
    )
    histories = _all(r, [keys.order_history(o, tags[o]) for o in order_ids])
    assert all(records), "an indexed order has no record"
    for oid, record in zip(order_ids, records, strict=True):
        assert shop.tag(customer_partition(record["customer_id"], partitions)) == tags[oid], (
            f"order {oid} is not in its customer's partition")

    # The order record and its order.created event exist together or not at all.
    for oid, history in zip(order_ids, histories, strict=True):
        types = [json.loads(h)["type"] for h in history.values()]
        assert "order.created" in types, f"order {oid} has no order.created event"
    created = {f["order_id"] for s in shop.partitioned(topology.ORDERS_CREATED)
               for _, f in r.xrange(s)}
    assert created <= set(order_ids), "an order.created event without its order"
    # Nothing was charged or taken for an order that does not exist.
    known = set(order_ids)
    for pattern in (keys.payment("*"), keys.reservation("*")):
        for key in r.scan_iter(pattern, count=1000):
            assert key.rsplit(":", 1)[1].split("{")[0] in known, f"{key}: a record for no order"
    takes = _takes(r)
    for (oid, product), take in takes.items():
        assert oid in known, f"{product}: stock taken for no order ({oid})"
        assert reservations[oid].get("status") == "reserved" or take["status"] != "taken", (
            f"order {oid}: {product} is still taken, but the order was not reserved")

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

    # Stock never negative; initial = current + units taken by completed orders,
    # each taken once (its take record) and all of it.
    taken: Counter[str] = Counter()
    for oid, record in zip(order_ids, records, strict=True):
        if reservations[oid].get("status") == "reserved":
            assert record["status"] in ("completed", "failed"), f"{oid}: stock taken, not done"
            wanted: Counter[str] = Counter()
            for line in json.loads(record["lines"]):
                taken[line["product_id"]] += line["quantity"]
                wanted[line["product_id"]] += line["quantity"]
            for product, quantity in wanted.items():
                take = takes.get((oid, product), {})
                assert take.get("status") == "taken" and int(take["quantity"]) == quantity, (
                    f"order {oid} is reserved, but {product}'s take is {take}")
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
        tag = shop.tag(customer_partition(customer, partitions))
        balance = int(r.hget(keys.customer(customer, tag), keys.BALANCE_FIELD))
        assert balance >= 0, f"{customer} balance is negative"
        assert initial == balance + kept[customer], (
            f"{customer}: initial {initial} != balance {balance} + charges kept {kept[customer]}"
        )

    if not _trimmed(r, shop):
        _check_events(r, shop, set(order_ids))

    # Every message is acknowledged or dead-lettered: nothing pending, nothing unread.
    for stream in (*shop.all_streams(), *shop.dead_streams()):
        if not r.exists(stream):
            continue
        last = r.xinfo_stream(stream)["last-generated-id"]
        for group in r.xinfo_groups(stream):
            where = f"{stream}/{group['name']}"
            assert group["pending"] == 0, f"{where}: {group['pending']} pending entries"
            assert group["last-delivered-id"] == last, f"{where}: unread entries"
    if not expect_dead_letters:
        for stream in shop.dead_streams():
            assert r.xlen(stream) == 0, f"unexpected dead letters in {stream}"
    return dict(statuses)


def _all(r: redis.Redis, hashes: list[str]) -> list[dict[str, str]]:
    with r.pipeline(transaction=False) as pipe:
        for key in hashes:
            pipe.hgetall(key)
        return pipe.execute()


def _takes(r: redis.Redis) -> dict[tuple[str, str], dict[str, str]]:
    """Every take record, by (order, product)."""
    found = {}
    for key in r.scan_iter(keys.take("*", "*").replace("{shop:product:*}", "*"), count=1000):
        product_key, order_id = key.split("{", 1)[1].split("}:", 1)
        found[(order_id, product_key.rsplit(":", 1)[1])] = r.hgetall(key)
    return found


def _trimmed(r: redis.Redis, shop: Topology) -> bool:
    for stream in shop.all_streams():
        if r.exists(stream):
            info = r.xinfo_stream(stream)
            if info["entries-added"] != info["length"]:
                return True
    return False


def _check_events(r: redis.Redis, shop: Topology, orders: set[str]) -> None:
    """With every event still in the streams: count them per order."""
    def per_order(stream: str) -> Counter[str]:
        return Counter(f["order_id"] for s in shop.partitioned(stream) for _, f in r.xrange(s)
                       if f.get("order_id") in orders)

    assert set(per_order(topology.ORDERS_CREATED)) == orders, "orders without their event"
    charged = per_order(topology.PAYMENTS_COMPLETED)
    refunded = per_order(topology.PAYMENTS_REFUNDED)
    reserved = per_order(topology.INVENTORY_RESERVED)
    # Each order is charged at most once and refunded at most once; refunded only if charged.
    assert max(charged.values(), default=0) <= 1, "an order was charged twice"
    assert max(refunded.values(), default=0) <= 1, "an order was refunded twice"
    assert set(refunded) <= set(charged), "a refund without a charge"
    assert max(reserved.values(), default=0) <= 1, "stock was taken twice for an order"
