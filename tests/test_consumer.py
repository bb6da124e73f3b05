"""The consumer runner's stream semantics, against a real server."""

from __future__ import annotations

import json
import threading
from collections.abc import Generator
from typing import Any

import pytest
import redis

from shop import topology
from shopctl.redis_server import RedisServer
from streams.connection import execute_all
from streams.consumer import Consumer
from streams.delivery import Delivery
from streams.envelope import Envelope
from streams.outcomes import Ack
from streams.topology import dead as dead_of
from tests.shop import GROUPS, Shop

pytestmark = pytest.mark.integration


def test_orders_placed_before_any_worker_started_are_handled(real_shop: Shop) -> None:
    real_shop.product("item1", stock=10)
    real_shop.customer("alice", 10_000)
    early = [real_shop.order("alice", ("item1", 1)) for _ in range(3)]
    # The groups do not exist yet: they are created from the start of the stream.
    streams = [s for s in real_shop.streams(topology.ORDERS_CREATED) if real_shop.r.exists(s)]
    assert streams and all(real_shop.r.xinfo_groups(stream) == [] for stream in streams)
    real_shop.settle()
    assert [real_shop.status(o) for o in early] == ["completed"] * 3


def test_a_restarted_consumer_first_finishes_its_own_pending_entries(real_shop: Shop) -> None:
    real_shop.product("item1", stock=10)
    real_shop.customer("alice", 10_000)
    order = real_shop.order("alice", ("item1", 1))
    payment = real_shop.consumers[topology.PAYMENT_GROUP]
    payment.ensure_groups()
    # The worker read the message and died before handling it:
    stream = real_shop.stream_of(topology.ORDERS_CREATED, order)
    real_shop.r.xreadgroup(payment.group, payment.name, {stream: ">"})
    assert real_shop.pending(topology.ORDERS_CREATED, payment.group) == 1
    restarted = Consumer(
        real_shop.r, real_shop.topology, payment.group, GROUPS[payment.group], name=payment.name
    )
    restarted.run(once=True)
    assert real_shop.pending(topology.ORDERS_CREATED, payment.group) == 0
    real_shop.settle()
    assert real_shop.status(order) == "completed"
    assert real_shop.balance("alice") == 9_000


def test_a_malformed_entry_is_dead_lettered_and_the_worker_goes_on(real_shop: Shop) -> None:
    real_shop.product("item1", stock=10)
    real_shop.customer("alice", 10_000)
    # Junk, in the last partition's stream: it names no order.
    junk = real_shop.topology.stream(
        topology.ORDERS_CREATED, real_shop.topology.tag(real_shop.topology.partitions - 1)
    )
    real_shop.r.xadd(junk, {"hello": "world"})
    real_shop.r.xadd(junk, {"type": "order.created", "order_id": "x", "data": "{"})
    order = real_shop.order("alice", ("item1", 1))
    real_shop.settle()
    assert real_shop.status(order) == "completed"
    dead = [
        d for d in real_shop.events(dead_of(topology.ORDERS_CREATED)) if d["group"] == "payment"
    ]
    assert [d["reason"] for d in dead] == [
        "missing field(s): type, event_id, order_id, occurred_at, causation_id, v, data",
        "missing field(s): event_id, occurred_at, causation_id, v",
    ]
    assert json.loads(dead[0]["original"]) == {"hello": "world"}
    assert dead[0]["stream"] == junk and dead[0]["deliveries"] == "1"


def test_an_event_on_the_wrong_stream_is_dead_lettered(real_shop: Shop) -> None:
    real_shop.product("item1", stock=10)
    real_shop.customer("alice", 10_000)
    real_shop.order("alice", ("item1", 1))
    real_shop.settle()
    [paid] = real_shop.events(topology.PAYMENTS_COMPLETED)
    stream = real_shop.add(topology.ORDERS_CREATED, paid)
    real_shop.settle([topology.PAYMENT_GROUP])
    [dead] = real_shop.events(dead_of(topology.ORDERS_CREATED))
    assert dead["reason"] == (
        f"event type 'payment.completed' does not belong on stream '{stream}'"
    )


def _flaky(failures: int, calls: list[str]):
    def handler(event: Envelope) -> Ack:
        calls.append(event.subject)
        if len(calls) <= failures:
            raise ConnectionResetError(f"payment gateway timeout #{len(calls)}")
        return Ack("handled on the third try")

    return handler


def test_a_handler_that_fails_twice_is_retried_and_succeeds(real_shop: Shop) -> None:
    real_shop.product("item1", stock=10)
    real_shop.customer("alice", 10_000)
    order = real_shop.order("alice", ("item1", 1))
    calls: list[str] = []
    consumer = Consumer(
        real_shop.r,
        real_shop.topology,
        "flaky",
        {"order.created": _flaky(2, calls)},
        retry_after_s=0.01,
        max_deliveries=5,
    )
    consumer.run(once=True)
    assert calls == [order] * 3
    assert real_shop.pending(topology.ORDERS_CREATED, "flaky") == 0
    assert real_shop.events(dead_of(topology.ORDERS_CREATED)) == []


def test_a_handler_that_always_fails_is_dead_lettered_after_max_deliveries(
    real_shop: Shop,
) -> None:
    real_shop.product("item1", stock=10)
    real_shop.customer("alice", 10_000)
    order = real_shop.order("alice", ("item1", 1))
    calls: list[str] = []
    consumer = Consumer(
        real_shop.r,
        real_shop.topology,
        "payment",
        {"order.created": _flaky(99, calls)},
        retry_after_s=0.01,
        max_deliveries=3,
    )
    consumer.run(once=True)
    assert len(calls) == 3
    [dead] = real_shop.events(dead_of(topology.ORDERS_CREATED))
    assert dead["order_id"] == order and dead["group"] == "payment"
    assert dead["deliveries"] == "4"  # counted by Redis: three tries, the fourth gave up
    assert dead["reason"] == (
        "gave up after 3 deliveries; last error: ConnectionResetError: payment gateway timeout #3"
    )
    assert real_shop.pending(topology.ORDERS_CREATED, "payment") == 0
    # The projector sees the dead letter: the order shows failed, naming the stage.
    real_shop.settle([topology.ORDER_STATUS_GROUP])
    assert real_shop.status(order) == "failed"
    reason = real_shop.r.hget(real_shop.order_key(order), "reason")
    assert reason.startswith("payment stage: gave up")


def test_steps_survive_the_server_losing_its_script_cache(real_shop: Shop) -> None:
    real_shop.product("item1", stock=10)
    real_shop.customer("alice", 10_000)
    first = real_shop.order("alice", ("item1", 1))
    real_shop.settle()
    real_shop.r.script_flush()  # as after a restart
    second = real_shop.order("alice", ("item1", 1))
    real_shop.settle()
    assert [real_shop.status(o) for o in (first, second)] == ["completed", "completed"]


def test_a_batch_is_read_in_one_round_trip_and_applied_in_one_pipeline(real_shop: Shop) -> None:
    real_shop.product("item1", stock=1000)
    real_shop.customer("alice", 10**9)
    for _ in range(100):
        real_shop.order("alice", ("item1", 1))
    consumer = real_shop.consumer(
        topology.PAYMENT_GROUP,
        batch_size=100,
    )
    consumer.ensure_groups()
    real_shop.reset_stats()
    assert consumer.handle_new() == 100
    # Every partition's stream in one read; on a cluster, where one command names
    # keys of one slot, a read per partition: a round trip per master.
    partitions = real_shop.topology.partitions
    assert real_shop.calls("xreadgroup") == (partitions if real_shop.cluster else 1)
    assert real_shop.calls("evalsha") == 100
    # 100 charges and 100 acknowledgements, all inside the scripts
    assert real_shop.calls("xack") == 100
    assert real_shop.pending(topology.ORDERS_CREATED, topology.PAYMENT_GROUP) == 0


def test_stop_finishes_the_loop_and_returns(real: redis.Redis) -> None:
    consumer = Consumer(
        real, topology.SHOP, topology.PAYMENT_GROUP, GROUPS[topology.PAYMENT_GROUP], block_ms=100
    )
    thread = threading.Thread(target=consumer.run)
    thread.start()
    consumer.stop()
    thread.join(5)
    assert not thread.is_alive()


def test_middleware_wraps_each_message_around_its_commit(real_shop: Shop) -> None:
    real_shop.product("item1", stock=10)
    real_shop.customer("alice", 10_000)
    real_shop.order("alice", ("item1", 1))
    seen: list[str] = []

    def outer(delivery: Delivery) -> Generator[None, Delivery, None]:
        seen.append("outer before")
        yield
        seen.append(f"outer after ({type(delivery.outcome).__name__}, {delivery.result[0]})")

    def inner(delivery: Delivery) -> Generator[None, Delivery, None]:
        seen.append("inner before")
        yield
        seen.append("inner after")

    real_shop.consumer(
        topology.PAYMENT_GROUP,
        middleware=[outer, inner],
    ).run(once=True)
    assert seen == ["outer before", "inner before", "inner after", "outer after (Apply, charged)"]


def test_the_default_middleware_logs_one_line_per_message_with_its_timing(
    real_shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    from streams import middleware

    real_shop.product("item1", stock=10)
    real_shop.customer("alice", 10_000)
    order = real_shop.order("alice", ("item1", 1))
    with caplog.at_level("INFO", logger="streams.handled"):
        real_shop.consumer(
            topology.PAYMENT_GROUP,
            middleware=middleware.DEFAULT,
        ).run(once=True)
    [record] = caplog.records
    assert record.getMessage() == (
        f"payment      order={order} charged 1000 (Alice 9000 left) → payments.completed"
    )
    assert record.outcome == "applied" and record.order_id == order
    assert record.elapsed_ms > 0


def test_messages_that_only_need_acknowledging_share_one_xack(real_shop: Shop) -> None:
    for i in range(50):
        # dead-lettered, not acked
        real_shop.r.xadd(real_shop.streams(topology.ORDERS_CREATED)[0], {"junk": str(i)})
    real_shop.product("item1", stock=100)
    real_shop.customer("alice", 10**6)
    for _ in range(30):
        real_shop.order("alice", ("item1", 1))
    consumer = Consumer(
        real_shop.r, real_shop.topology, "noop", {"order.created": lambda _: Ack("seen")}
    )
    consumer.ensure_groups()
    real_shop.reset_stats()
    assert consumer.handle_new() == 80
    assert real_shop.calls("xack") == 1 + 50  # one for the 30 acks; one per dead letter
    assert real_shop.pending(topology.ORDERS_CREATED, "noop") == 0


def test_execute_all_answers_each_command_in_its_place(real: redis.Redis) -> None:
    real.set("text", "hello")
    answers = execute_all(real, [("INCR", "n"), ("INCR", "text"), ("ECHO", "after")])
    assert answers[0] == 1 and answers[2] == "after"
    assert isinstance(answers[1], redis.ResponseError)


def test_execute_all_drops_a_connection_that_failed_mid_answer(
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True, max_connections=1)
    read = redis.connection.Connection.read_response
    calls = 0

    def fails_on_the_second_answer(self: redis.connection.Connection, *a: Any, **k: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt  # anything, between two answers
        return read(self, *a, **k)

    try:
        assert execute_all(client, [("PING",)]) == ["PONG"]  # connected before the failure
        with monkeypatch.context() as patch:
            patch.setattr(redis.connection.Connection, "read_response", fails_on_the_second_answer)
            with pytest.raises(KeyboardInterrupt):
                execute_all(client, [("ECHO", "one"), ("ECHO", "two"), ("ECHO", "three")])
        # Had the connection been kept, "two" would be read here.
        assert execute_all(client, [("ECHO", "next")]) == ["next"]
    finally:
        client.close()
