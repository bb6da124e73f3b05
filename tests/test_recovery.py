"""Recovery from dead consumers, retries with backoff, and bounded streams,
against a real server (fakeredis has no idle time)."""

from __future__ import annotations

import time

import pytest
import redis

from shop import topology
from streams import retention
from streams.consumer import Consumer
from streams.envelope import Envelope
from streams.outcomes import Ack
from streams.topology import dead as dead_of
from tests.shop import GROUPS, Shop

pytestmark = pytest.mark.integration


def alices(shop: Shop, stream: str) -> str:
    """The partition's stream of ``stream`` that alice's orders go to: every
    test here has only her."""
    return shop.customer_stream(stream, "alice")


def _killed_mid_batch(shop: Shop, group: str, name: str = "payment-killed") -> int:
    """A consumer that read a batch and died (kill -9) before handling it."""
    Consumer(shop.r, shop.topology, group, GROUPS[group]).ensure_groups()
    reply = shop.r.xreadgroup(group, name, {alices(shop, topology.ORDERS_CREATED): ">"}, count=100)
    return len(reply[0][1])


def test_a_survivor_claims_what_a_killed_consumer_left_pending(real_shop: Shop) -> None:
    real_shop.product("item1", stock=10)
    real_shop.customer("alice", 10_000)
    orders = [real_shop.order("alice", ("item1", 1)) for _ in range(3)]
    assert _killed_mid_batch(real_shop, topology.PAYMENT_GROUP) == 3
    survivor = real_shop.consumer(
        topology.PAYMENT_GROUP,
        name="payment-survivor",
        claim_idle_ms=200,
    )
    survivor.ensure_groups()
    # Not yet idle long enough: a consumer that is merely slow keeps its messages.
    assert survivor.claim_idle() == 0
    time.sleep(0.3)
    assert survivor.claim_idle() == 3
    assert real_shop.pending(topology.ORDERS_CREATED, topology.PAYMENT_GROUP) == 0
    real_shop.settle()
    assert [real_shop.status(o) for o in orders] == ["completed"] * 3
    assert real_shop.balance("alice") == 7_000  # each charged once


def test_a_claimed_message_that_was_already_handled_changes_nothing(real_shop: Shop) -> None:
    """The slow-consumer case: it handled the message, but its ack came after
    the claim. The survivor's second delivery finds the payment record."""
    real_shop.product("item1", stock=10)
    real_shop.customer("alice", 10_000)
    order = real_shop.order("alice", ("item1", 1))
    real_shop.settle()
    # Replay the same entry as pending for a vanished consumer.
    created = alices(real_shop, topology.ORDERS_CREATED)
    real_shop.r.xgroup_setid(created, topology.PAYMENT_GROUP, "0")
    real_shop.r.xreadgroup(topology.PAYMENT_GROUP, "ghost", {created: ">"})
    time.sleep(0.06)
    survivor = real_shop.consumer(
        topology.PAYMENT_GROUP,
        claim_idle_ms=50,
    )
    survivor.ensure_groups()
    assert survivor.claim_idle() == 1
    assert real_shop.balance("alice") == 9_000
    assert len(real_shop.events(topology.PAYMENTS_COMPLETED)) == 1
    assert real_shop.status(order) == "completed"


def test_retries_back_off_exponentially_up_to_the_claim_idle_time(real: redis.Redis) -> None:
    consumer = Consumer(real, topology.SHOP, "g", {}, retry_after_s=0.5, claim_idle_ms=3000)
    assert [consumer.backoff_s(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_failing_message_is_retried_after_its_backoff_not_before(real_shop: Shop) -> None:
    real_shop.customer("alice", 10_000)
    real_shop.product("item1", stock=10)
    order = real_shop.order("alice", ("item1", 1))
    calls: list[float] = []

    def flaky(event: Envelope) -> Ack:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise TimeoutError("gateway timeout")
        return Ack("handled")

    consumer = Consumer(
        real_shop.r,
        real_shop.topology,
        "flaky",
        {"order.created": flaky},
        retry_after_s=0.2,
        block_ms=20,
    )
    consumer.ensure_groups()
    deadline = time.monotonic() + 5
    while len(calls) < 3 and time.monotonic() < deadline:
        consumer.handle_new(block_ms=20)
        consumer.retry_due(time.monotonic())
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert len(calls) == 3 and gaps[0] >= 0.2 and gaps[1] >= 0.4, gaps
    assert real_shop.pending(topology.ORDERS_CREATED, "flaky") == 0
    # The error is kept in Redis, where any consumer of the group can read it.
    [(stream, entry_id, _)] = real_shop.entries(topology.ORDERS_CREATED)
    error_key = real_shop.topology.delivery_error("flaky", stream, entry_id)
    assert real_shop.r.get(error_key) == "TimeoutError: gateway timeout"
    assert 0 < real_shop.r.ttl(error_key) <= 24 * 3600
    assert order


def test_deliveries_and_the_last_error_survive_the_consumer_that_failed(
    real_shop: Shop,
) -> None:
    """Consumer A fails the message twice and dies; B claims it, and, the
    limit reached, dead-letters it with A's error: counted by Redis."""
    real_shop.customer("alice", 10_000)
    real_shop.product("item1", stock=10)
    order = real_shop.order("alice", ("item1", 1))

    def broken(event: Envelope) -> Ack:
        raise ValueError(f"cannot handle {event.subject}")

    a = Consumer(
        real_shop.r,
        real_shop.topology,
        topology.PAYMENT_GROUP,
        {"order.created": broken},
        name="a",
        retry_after_s=0.01,
        max_deliveries=2,
    )
    a.ensure_groups()
    a.handle_new()
    time.sleep(0.02)
    a.retry_due(time.monotonic())
    assert real_shop.events(dead_of(topology.ORDERS_CREATED)) == []  # a dies here
    time.sleep(0.06)
    b = real_shop.consumer(
        topology.PAYMENT_GROUP,
        name="b",
        claim_idle_ms=50,
        max_deliveries=2,
    )
    b.ensure_groups()
    assert b.claim_idle() == 1
    [dead] = real_shop.events(dead_of(topology.ORDERS_CREATED))
    assert dead["deliveries"] == "3" and dead["group"] == topology.PAYMENT_GROUP
    assert dead["reason"] == (
        f"gave up after 2 deliveries; last error: ValueError: cannot handle {order}"
    )
    real_shop.settle([topology.ORDER_STATUS_GROUP])
    assert real_shop.status(order) == "failed"


# -- bounded streams -----------------------------------------------------------


def test_a_stream_is_never_trimmed_past_an_entry_a_group_has_not_handled(
    real_shop: Shop,
) -> None:
    real_shop.product("item1", stock=100)
    real_shop.customer("alice", 10**6)
    for _ in range(5):
        real_shop.order("alice", ("item1", 1))
    # The payment group has handled all five; order-status none yet.
    real_shop.settle([topology.PAYMENT_GROUP])
    real_shop.consumer(topology.ORDER_STATUS_GROUP).ensure_groups()
    created = alices(real_shop, topology.ORDERS_CREATED)
    t = real_shop.topology
    assert retention.trim(real_shop.r, t, [created], 0) == {created: 0}
    # order-status reads three and dies with them pending: the oldest pending is the limit.
    real_shop.r.xreadgroup(topology.ORDER_STATUS_GROUP, "dead", {created: ">"}, count=3)
    first_pending = real_shop.r.xrange(created)[0][0]
    assert retention.trim(real_shop.r, t, [created], 0) == {created: 0}
    assert real_shop.r.xrange(created)[0][0] == first_pending
    real_shop.consumers[topology.ORDER_STATUS_GROUP].claim_idle_ms = 0  # claim the dead one's
    real_shop.settle()
    assert retention.trim(real_shop.r, t, [created], 0) == {created: 5}
    assert real_shop.r.xlen(created) == 0


def test_a_stream_waits_for_a_group_that_has_not_started_yet(real_shop: Shop) -> None:
    real_shop.product("item1", stock=100)
    real_shop.customer("alice", 10**6)
    real_shop.order("alice", ("item1", 1))
    real_shop.settle([topology.PAYMENT_GROUP, topology.ORDER_STATUS_GROUP])
    # payments.completed is read by inventory too, which never ran.
    completed = alices(real_shop, topology.PAYMENTS_COMPLETED)
    assert retention.trim(real_shop.r, real_shop.topology, [completed], 0) == {}
    assert real_shop.r.xlen(completed) == 1


def test_a_trim_keeps_the_retention_window(real_shop: Shop) -> None:
    real_shop.product("item1", stock=100)
    real_shop.customer("alice", 10**6)
    for _ in range(3):
        real_shop.order("alice", ("item1", 1))
    real_shop.settle()
    streams = [alices(real_shop, s) for s in topology.SHOP.streams]
    assert retention.trim(real_shop.r, real_shop.topology, streams, 3600) == dict.fromkeys(
        streams, 0
    )


def test_stream_memory_stays_flat_once_retention_is_reached(real_shop: Shop) -> None:
    real_shop.product("item1", stock=10**6)
    real_shop.customer("alice", 10**9)
    for consumer in real_shop.consumers.values():
        consumer.retention_s = 0
    sizes = []
    for _round in range(6):
        for _ in range(100):
            real_shop.order("alice", ("item1", 1))
        real_shop.settle()
        for consumer in real_shop.consumers.values():
            consumer.maintain()
        streams = real_shop.topology.all_streams()
        sizes.append(sum(real_shop.r.memory_usage(s) or 0 for s in streams))
        assert max(real_shop.r.xlen(s) for s in streams) == 0
    assert max(sizes[1:]) <= sizes[1] * 1.1, sizes


def test_consumers_long_gone_with_nothing_pending_are_forgotten(real_shop: Shop) -> None:
    real_shop.customer("alice", 10_000)
    real_shop.product("item1", stock=10)
    real_shop.order("alice", ("item1", 1))
    me = real_shop.consumer(
        topology.PAYMENT_GROUP,
        name="me",
    )
    me.ensure_groups()
    created = alices(real_shop, topology.ORDERS_CREATED)
    real_shop.r.xreadgroup(topology.PAYMENT_GROUP, "crashed-holding", {created: ">"})
    real_shop.r.xreadgroup(topology.PAYMENT_GROUP, "crashed-empty", {created: ">"})
    me.handle_new()
    time.sleep(0.1)
    assert me.forget_consumers(after_s=0.05) == ["crashed-empty"]
    names = {c["name"] for c in real_shop.r.xinfo_consumers(created, topology.PAYMENT_GROUP)}
    # A consumer that holds messages is kept (they are claimed, not dropped).
    assert names == {"crashed-holding", "me"}
    assert me.forget_consumers(after_s=3600) == []
