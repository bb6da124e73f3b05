"""The handlers' Lua steps, on fakeredis (fast) and on a real server."""

from __future__ import annotations

import json
import time
from datetime import datetime

from shop import keys, topology
from streams.deadletter import DeadLetter
from streams.envelope import Envelope
from streams.topology import dead as dead_of
from tests.shop import Shop


def data(shop: Shop, stream: str) -> list[dict]:
    return [json.loads(f["data"]) for f in shop.events(stream)]


def test_an_order_is_charged_stock_is_taken_and_it_completes(shop: Shop) -> None:
    shop.product("item1", stock=10, price_cents=1200)
    shop.customer("alice", 10_000)
    order = shop.order("alice", ("item1", 3))
    shop.settle()
    assert shop.status(order) == "completed"
    assert shop.balance("alice") == 10_000 - 3600
    assert shop.stock("item1") == 7
    [paid] = shop.events(topology.PAYMENTS_COMPLETED)
    [created] = shop.events(topology.ORDERS_CREATED)
    # Every outcome names what caused it.
    assert paid["causation_id"] == created["event_id"] and paid["order_id"] == order
    # When the status last moved, in ms: the same moment as updated_at.
    moved_ms, moved_at = shop.r.hmget(shop.order_key(order), "updated_ms", "updated_at")
    assert abs(int(moved_ms) - time.time() * 1000) < 5_000
    assert datetime.fromisoformat(moved_at).timestamp() * 1000 == int(moved_ms)


def test_a_short_balance_is_declined_and_nothing_is_taken(shop: Shop) -> None:
    shop.product("item1", stock=10, price_cents=1200)
    shop.customer("bob", 500)
    order = shop.order("bob", ("item1", 1))
    shop.settle()
    assert shop.status(order) == "rejected"
    assert shop.r.hget(shop.order_key(order), "reason") == "payment declined: insufficient funds"
    assert shop.balance("bob") == 500 and shop.stock("item1") == 10
    assert data(shop, topology.PAYMENTS_FAILED)[0]["reason"] == "insufficient_funds"


def test_a_customer_who_vanished_is_declined_as_unknown(shop: Shop) -> None:
    shop.product("item1", stock=10)
    shop.customer("carol", 10_000)
    order = shop.order("carol", ("item1", 1))
    shop.r.delete(shop.customer_key("carol"))
    shop.settle()
    assert shop.status(order) == "rejected"
    assert data(shop, topology.PAYMENTS_FAILED)[0]["reason"] == "unknown_customer"


def test_short_stock_takes_nothing_and_refunds_the_charge(shop: Shop) -> None:
    shop.product("item1", stock=10, price_cents=100)
    shop.product("item2", stock=2, price_cents=1000)
    shop.customer("alice", 10_000)
    order = shop.order("alice", ("item1", 5), ("item2", 3))
    shop.settle()
    assert shop.status(order) == "refunded"
    assert shop.stock("item1") == 10 and shop.stock("item2") == 2  # all or nothing
    assert shop.balance("alice") == 10_000
    [rejected] = data(shop, topology.INVENTORY_REJECTED)
    assert rejected == {
        "customer_id": "alice",
        "reason": "out_of_stock",
        "product_id": "item2",
        "requested": 3,
        "available": 2,
    }
    [refund] = data(shop, topology.PAYMENTS_REFUNDED)
    assert refund["amount_cents"] == 3500
    assert shop.r.hget(shop.order_key(order), "reason") == (
        "refunded: out of stock: item2 (requested 3, available 2)"
    )


def test_the_same_product_on_two_lines_is_taken_for_the_sum(shop: Shop) -> None:
    shop.product("item1", stock=5)
    shop.customer("alice", 100_000)
    too_many = shop.order("alice", ("item1", 3), ("item1", 3))
    enough = shop.order("alice", ("item1", 2), ("item1", 3))
    shop.settle()
    assert shop.status(too_many) == "refunded"
    assert shop.status(enough) == "completed"
    assert shop.stock("item1") == 0


def test_the_price_is_captured_when_the_order_is_placed(shop: Shop) -> None:
    shop.product("item1", stock=5, price_cents=1000)
    shop.customer("alice", 100_000)
    order = shop.order("alice", ("item1", 2))
    shop.r.hset(keys.product("item1"), "price_cents", 9999)
    shop.settle()
    assert shop.balance("alice") == 100_000 - 2000
    assert shop.r.hget(shop.order_key(order), "total_cents") == "2000"


def test_a_duplicated_event_changes_nothing_twice(shop: Shop) -> None:
    """At-least-once delivery: the very same event arrives twice."""
    shop.product("item1", stock=10, price_cents=1000)
    shop.customer("alice", 10_000)
    order = shop.order("alice", ("item1", 1))
    [created] = shop.events(topology.ORDERS_CREATED)
    shop.settle()
    for stream in (
        topology.ORDERS_CREATED,
        topology.PAYMENTS_COMPLETED,
        topology.INVENTORY_RESERVED,
    ):
        [fields] = shop.events(stream)
        shop.add(stream, fields)  # the same event, delivered again
    shop.settle()
    assert shop.balance("alice") == 9_000 and shop.stock("item1") == 9
    # Each stream holds the original and the test's copy, and nothing new.
    for stream in (topology.PAYMENTS_COMPLETED, topology.INVENTORY_RESERVED):
        events = shop.events(stream)
        assert len(events) == 2 and len({e["event_id"] for e in events}) == 1
    assert shop.status(order) == "completed"
    assert len(shop.r.hgetall(shop.history_key(order))) == 3
    assert created["event_id"] in shop.r.hgetall(shop.history_key(order))


def test_a_refund_happens_at_most_once(shop: Shop) -> None:
    shop.product("item1", stock=0, price_cents=1000)
    shop.customer("alice", 10_000)
    shop.order("alice", ("item1", 1))
    shop.settle()
    [rejected] = shop.events(topology.INVENTORY_REJECTED)
    shop.add(topology.INVENTORY_REJECTED, rejected)
    shop.settle()
    assert len(shop.events(topology.PAYMENTS_REFUNDED)) == 1
    assert shop.balance("alice") == 10_000


def test_a_refund_for_an_order_never_charged_is_dead_lettered(shop: Shop) -> None:
    bogus = Envelope.parse(
        {
            "type": "inventory.rejected",
            "event_id": "e1",
            "order_id": "ord_nope",
            "occurred_at": "2026-11-21T00:00:00Z",
            "causation_id": "",
            "v": "1",
            "data": json.dumps(
                {
                    "customer_id": "alice",
                    "reason": "out_of_stock",
                    "product_id": "item1",
                    "requested": 1,
                    "available": 0,
                }
            ),
        },
        topology.SHOP,
    )
    shop.customer("alice", 10_000)
    shop.add(topology.INVENTORY_REJECTED, bogus.to_fields(topology.SHOP))
    shop.settle([topology.PAYMENT_GROUP])
    [dead] = shop.events(dead_of(topology.INVENTORY_REJECTED))
    assert dead["group"] == "payment"
    assert "nothing to refund: the order was never charged" in dead["reason"]
    assert shop.balance("alice") == 10_000


def test_late_events_never_move_an_order_backwards(shop: Shop) -> None:
    shop.product("item1", stock=10)
    shop.customer("alice", 100_000)
    order = shop.order("alice", ("item1", 1))
    shop.settle([topology.PAYMENT_GROUP, topology.INVENTORY_GROUP])
    # The projector reads inventory.reserved before payment.completed.
    projector = shop.consumers[topology.ORDER_STATUS_GROUP]
    every_stream = projector.streams
    projector.streams = shop.streams(topology.INVENTORY_RESERVED)
    projector.run(once=True)
    assert shop.status(order) == "completed"
    projector.streams = every_stream
    projector.run(once=True)
    assert shop.status(order) == "completed"
    history = shop.r.hgetall(shop.history_key(order))
    assert sorted(json.loads(h)["type"] for h in history.values()) == [
        "inventory.reserved",
        "order.created",
        "payment.completed",
    ]
    # and the status indexes moved with it
    assert shop.by_status("completed") == [order]
    assert shop.by_status("pending") == []


def test_an_event_for_an_order_that_does_not_exist_is_dead_lettered(shop: Shop) -> None:
    shop.customer("alice", 10_000)
    event = {
        "type": "payment.failed",
        "event_id": "e1",
        "order_id": "ord_ghost",
        "occurred_at": "2026-11-21T00:00:00Z",
        "causation_id": "",
        "v": "1",
        "data": json.dumps(
            {"customer_id": "alice", "amount_cents": 1, "reason": "insufficient_funds"}
        ),
    }
    shop.add(topology.PAYMENTS_FAILED, event)
    shop.settle([topology.ORDER_STATUS_GROUP])
    [dead] = shop.events(dead_of(topology.PAYMENTS_FAILED))
    assert dead["reason"] == "order ord_ghost does not exist"
    assert dead["group"] == "order-status"
    assert not shop.r.exists(shop.order_key("ord_ghost"))


def test_a_dead_letter_marks_its_order_failed_with_the_stage(shop: Shop) -> None:
    shop.product("item1", stock=10)
    shop.customer("alice", 100_000)
    order = shop.order("alice", ("item1", 1))
    shop.settle([topology.PAYMENT_GROUP])
    # payment.completed that the inventory worker cannot read:
    [(stream, entry_id, fields)] = shop.entries(topology.PAYMENTS_COMPLETED)
    shop.r.xdel(stream, entry_id)
    shop.add(topology.PAYMENTS_COMPLETED, fields | {"data": "{oops"})
    shop.settle()
    assert shop.status(order) == "failed"
    # Each group that reads the stream gives up on the entry and says so.
    dead = shop.events(dead_of(topology.PAYMENTS_COMPLETED))
    assert sorted(d["group"] for d in dead) == ["inventory", "order-status"]
    reason = shop.r.hget(shop.order_key(order), "reason")
    assert reason.split(" stage: ")[0] in {"inventory", "order-status"}
    assert reason.split(" stage: ")[1].startswith("bad data for payment.completed: data: Invalid")


def test_a_subscribers_dead_letter_leaves_its_order_as_it_is(shop: Shop) -> None:
    """A gateway's subscription that gave up on an event says nothing about
    the order: only the saga's groups' dead letters fail it."""
    shop.product("item1", stock=10)
    shop.customer("alice", 100_000)
    order = shop.order("alice", ("item1", 1))
    shop.settle([topology.PAYMENT_GROUP, topology.ORDER_STATUS_GROUP])
    [(stream, entry_id, fields)] = shop.entries(topology.PAYMENTS_COMPLETED)
    letter = DeadLetter.of(stream, entry_id, fields, "gateway.final-statuses", "a bad template",
                           6, "order_id")
    shop.r.xadd(dead_of(stream), letter.to_fields("order_id"))
    shop.settle([topology.ORDER_STATUS_GROUP])
    assert shop.status(order) == "paid"
    shop.settle()
    assert shop.status(order) == "completed"


def test_money_and_stock_never_move_for_an_order_nobody_accepted(shop: Shop) -> None:
    """An order.created or payment.completed written by hand, for an order the
    API never created, charges nothing and takes nothing: it is dead-lettered."""
    shop.product("item1", stock=10)
    shop.customer("alice", 10_000)
    header = {
        "event_id": "e1",
        "order_id": "ord_ghost",
        "occurred_at": "2026-11-21T00:00:00Z",
        "causation_id": "",
        "v": "1",
    }
    line = {"product_id": "item1", "quantity": 1, "price_cents": 1000}
    shop.add(
        topology.ORDERS_CREATED,
        header
        | {
            "type": "order.created",
            "data": json.dumps({"customer_id": "alice", "lines": [line], "total_cents": 1000}),
        },
    )
    shop.add(
        topology.PAYMENTS_COMPLETED,
        header
        | {
            "type": "payment.completed",
            "data": json.dumps({"customer_id": "alice", "amount_cents": 1000, "lines": [line]}),
        },
    )
    shop.settle([topology.PAYMENT_GROUP, topology.INVENTORY_GROUP])
    assert shop.balance("alice") == 10_000 and shop.stock("item1") == 10
    [charge] = shop.events(dead_of(topology.ORDERS_CREATED))
    [take] = shop.events(dead_of(topology.PAYMENTS_COMPLETED))
    assert (charge["group"], charge["reason"]) == (
        "payment",
        "order does not exist; nothing charged",
    )
    assert (take["group"], take["reason"]) == ("inventory", "order does not exist; no stock taken")


def test_the_largest_order_is_priced_exactly(shop: Shop) -> None:
    """50 lines of 10,000 units at 1e8 cents: 5e13 cents, written by the intake
    script as a plain integer in the order and in its event."""
    for i in range(50):
        shop.product(f"p{i}", stock=10_000, price_cents=100_000_000)
    shop.customer("rich", 10**13)
    order = shop.order("rich", *((f"p{i}", 10_000) for i in range(50)))
    assert shop.r.hget(shop.order_key(order), "total_cents") == "50000000000000"
    [created] = shop.events(topology.ORDERS_CREATED)
    event = Envelope.parse(created, topology.SHOP)
    assert event.payload.total_cents == 5 * 10**13  # type: ignore[union-attr]
    assert {line.price_cents for line in event.payload.lines} == {10**8}  # type: ignore[union-attr]
    shop.settle()  # the largest balance (1e13) cannot pay it
    assert shop.status(order) == "rejected" and shop.balance("rich") == 10**13
