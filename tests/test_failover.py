"""What a failover can lose or repeat, each claim of docs/durability.md made
to happen on a real local cluster (3 masters, 3 replicas) and checked.

Replication is asynchronous: what a master wrote and no replica received is
gone when the replica is promoted. To lose exactly that, a test freezes the
replica (SIGSTOP: it applies nothing more), lets the master write, kills the
master and the replica (SIGKILL: what was sent to it unread goes with it),
starts the replica again from its AOF and promotes it; then it starts the
old master again (it comes back as the new master's replica).

- An order is answered 202 only once a replica holds it; until then 504.
- A worker step that a failover takes back (a charge) is done again, once.
- An event a failover takes back was not acted on: nothing reads what a
  replica has not confirmed.
- A status move a failover takes back is made again, to the same status.
- A sub-step in another slot (a take of stock) is not built on until a
  replica of its master holds it; lost, it is done again, once.
- MOVED and ASK are followed; /readyz is 503 while a partition has no master.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis.crc import key_slot

from shop import keys, topology
from shopctl.cluster import LocalCluster
from streams.autopipeline import AutoPipeline
from streams.nodes import Nodes
from tests import cluster as local
from tests import invariants
from tests.conftest import api_app, bearer, cluster_shop, make_token
from tests.shop import Shop

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# What the consumers of these tests wait for a replica, and how soon a
# message left pending by a lost write is claimed back.
FAST = {"wait_ms": 300, "claim_idle_ms": 100, "retry_after_s": 0.01}


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster of its own, with AOF: these tests fail its masters over, and
    start a node again from what it had written."""
    started = local.start(tmp_path / "cluster", aof=True)
    yield started
    started.stop()


@pytest.fixture
def on_fresh(fresh: LocalCluster) -> Iterator[Shop]:
    """The saga's driver on that cluster."""
    shop = cluster_shop(fresh)
    yield shop
    shop.close()


def synced(cluster: LocalCluster, master: int) -> None:
    """Wait until a replica of ``master`` holds everything it holds now."""
    with cluster.client(master) as c, c.pipeline(transaction=False) as pipe:
        pipe.set("test:fence{" + _tag_on(cluster, master) + "}", "1")
        pipe.execute_command("WAIT", 1, 5000)
        assert pipe.execute()[1] == 1, f"no replica of {master} caught up"


def _tag_on(cluster: LocalCluster, master: int) -> str:
    """A partition tag whose slot ``master`` serves."""
    return next(f"p{p}" for p in range(local.PARTITIONS)
                if local.master_of(cluster, f"{{p{p}}}") == master)


def product_not_on(cluster: LocalCluster, master: int) -> str:
    return next(f"item{i}" for i in range(100)
                if local.master_of(cluster, keys.product(f"item{i}")) != master)


def consumers(shop: Shop) -> dict[str, object]:
    return {group: shop.consumer(group, name=f"{group}-a", **FAST)
            for group in (topology.PAYMENT_GROUP, topology.INVENTORY_GROUP,
                          topology.ORDER_STATUS_GROUP)}


def settle(shop: Shop, running: dict[str, object], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while shop.backlog() or any(c.retries for c in running.values()):  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, f"backlog {shop.backlog()}"
        for consumer in running.values():
            consumer.run(once=True)  # type: ignore[attr-defined]
        time.sleep(0.05)


def test_an_order_is_answered_202_only_once_a_replica_holds_it(
    fresh: LocalCluster, on_fresh: Shop,
) -> None:
    shop = on_fresh
    shop.product("item1", stock=10)
    shop.customer("alice", 10_000)
    alice = bearer(make_token(shop.async_client, "customer", "alice",
                              partitions=local.PARTITIONS))
    master = local.master_of(fresh, shop.customer_key("alice"))
    replica = local.replica_of(fresh, master)
    body = {"lines": [{"product_id": "item1", "quantity": 1}]}
    app = api_app(shop.async_client(), partitions=local.PARTITIONS, redis_wait_replicas=1,
                  redis_wait_ms=200, api_redis_timeout_s=0.6)
    with TestClient(app, headers=alice | {"Idempotency-Key": "k1"}) as api:
        local.stop(fresh, replica)
        try:
            unknown = api.post("/orders", json=body)
        finally:
            local.resume(fresh, replica)
        assert unknown.status_code == 504, unknown.text
        assert unknown.json()["outcome"] == "unknown"
        order_id = unknown.json()["order_id"]
        # The same request again, once a replica can confirm: the same order, placed once.
        again = api.post("/orders", json=body)
        assert again.status_code == 202, again.text
        assert again.json()["id"] == order_id
    tags = shop.topology.tags()
    assert sum(shop.r.zcard(keys.orders_index(t)) for t in tags) == 1


def test_a_charge_a_failover_takes_back_is_made_again_once_and_nothing_acted_on_it(
    fresh: LocalCluster, on_fresh: Shop,
) -> None:
    shop = on_fresh
    shop.product("item1", stock=10, price_cents=1000)
    shop.customer("alice", 10_000)
    order = shop.order("alice", ("item1", 2))
    master = local.master_of(fresh, shop.order_key(order))
    replica = local.replica_of(fresh, master)
    synced(fresh, master)
    running = consumers(shop)
    payment = running[topology.PAYMENT_GROUP]
    # The payment worker reads the order (confirmed by the replica); the replica
    # freezes just before the charge is written: the charge is on the master only.
    payment.committer.before_round = lambda n: local.stop(fresh, replica)  # type: ignore[attr-defined]
    payment.run(once=True)  # type: ignore[attr-defined]
    payment.committer.before_round = None  # type: ignore[attr-defined]
    assert shop.balance("alice") == 8_000
    # Downstream, the inventory worker and the projector read payment.completed,
    # which no replica holds: they wait, and take or move nothing.
    for group in (topology.INVENTORY_GROUP, topology.ORDER_STATUS_GROUP):
        running[group].run(once=True)  # type: ignore[attr-defined]
    assert shop.stock("item1") == 10
    assert not shop.r.exists(keys.take("item1", order))
    assert shop.status(order) == "pending"

    local.lose(fresh, master, replica)
    assert shop.balance("alice") == 10_000, "the charge was not lost: the test proves nothing"
    assert not shop.r.exists(keys.payment(order, shop.order_tag(order)))
    settle(shop, running)
    assert shop.status(order) == "completed"
    assert shop.balance("alice") == 8_000 and shop.stock("item1") == 8
    invariants.check(shop.r, {"item1": 10}, {"alice": 10_000}, partitions=local.PARTITIONS)


def test_a_status_move_a_failover_takes_back_is_made_again_to_the_same_status(
    fresh: LocalCluster, on_fresh: Shop,
) -> None:
    shop = on_fresh
    shop.product("item1", stock=10)
    shop.customer("alice", 10_000)
    order = shop.order("alice", ("item1", 1))
    master = local.master_of(fresh, shop.order_key(order))
    replica = local.replica_of(fresh, master)
    running = consumers(shop)
    running[topology.PAYMENT_GROUP].run(once=True)  # type: ignore[attr-defined]
    running[topology.INVENTORY_GROUP].run(once=True)  # type: ignore[attr-defined]
    synced(fresh, master)
    projector = running[topology.ORDER_STATUS_GROUP]
    projector.committer.before_round = lambda n: local.stop(fresh, replica)  # type: ignore[attr-defined]
    projector.run(once=True)  # type: ignore[attr-defined]
    projector.committer.before_round = None  # type: ignore[attr-defined]
    assert shop.status(order) == "completed"  # what a client reading the master saw

    local.lose(fresh, master, replica)
    assert shop.status(order) == "pending", "the status move was not lost"
    settle(shop, running)
    assert shop.status(order) == "completed"
    history = [json.loads(h)["type"] for h in shop.r.hvals(shop.history_key(order))]
    assert sorted(history) == ["inventory.reserved", "order.created", "payment.completed"]
    invariants.check(shop.r, {"item1": 10}, {"alice": 10_000}, partitions=local.PARTITIONS)


def test_stock_taken_on_another_master_is_built_on_only_once_a_replica_holds_it(
    fresh: LocalCluster, on_fresh: Shop,
) -> None:
    shop = on_fresh
    order_master = local.master_of(fresh, shop.customer_key("alice"))
    product = product_not_on(fresh, order_master)
    shop.product(product, stock=10)
    shop.customer("alice", 10_000)
    order = shop.order("alice", (product, 3))
    running = consumers(shop)
    running[topology.PAYMENT_GROUP].run(once=True)  # type: ignore[attr-defined]
    master = local.master_of(fresh, keys.product(product))
    replica = local.replica_of(fresh, master)
    local.stop(fresh, replica)
    inventory = running[topology.INVENTORY_GROUP]
    inventory.run(once=True)  # type: ignore[attr-defined]
    # Taken on the product's master, which no replica confirmed: not concluded.
    assert shop.stock(product) == 7
    assert not shop.r.exists(keys.reservation(order, shop.order_tag(order)))

    local.lose(fresh, master, replica)
    assert shop.stock(product) == 10, "the take was not lost"
    settle(shop, running)
    assert shop.status(order) == "completed"
    assert shop.stock(product) == 7
    invariants.check(shop.r, {product: 10}, {"alice": 10_000}, partitions=local.PARTITIONS)


def test_moved_is_followed_after_a_failover(fresh: LocalCluster) -> None:
    client = local.sync_client(fresh)
    nodes = Nodes(client, replicas=1)
    assert nodes.execute([("SET", "k{p0}", "v"), ("SET", "k{p1}", "w")], wait=True) == [
        "OK", "OK"]
    master = local.master_of(fresh, "k{p0}")
    replica = local.replica_of(fresh, master)
    with fresh.client(replica) as c:
        c.execute_command("CLUSTER", "FAILOVER")  # a graceful one: nothing is lost
    deadline = time.monotonic() + 20
    while local.master_of(fresh, "{p0}") != replica:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    fresh.wait_healthy()
    # The client's map still says the old master: it answers MOVED, which is followed.
    assert nodes.node_of("k{p0}").endswith(str(master))
    assert nodes.execute([("GET", "k{p0}"), ("GET", "k{p1}")], wait=True) == ["v", "w"]
    assert nodes.node_of("k{p0}").endswith(str(replica))

    async def through_the_auto_pipeline() -> list[object]:
        async_client = local.async_client(fresh)()
        batched = AutoPipeline(async_client, replicas=1)
        try:
            await async_client.initialize()
            with fresh.client(master) as c:  # and back, behind its map's back
                c.execute_command("CLUSTER", "FAILOVER")
            while local.master_of(fresh, "{p0}") != master:
                await asyncio.sleep(0.05)
            return list(await asyncio.gather(
                batched.execute_command("GET", "k{p0}"),
                batched.execute_command("SET", "k{p0}", "x", durable=True)))
        finally:
            await async_client.aclose()

    fresh.wait_healthy()
    assert asyncio.run(through_the_auto_pipeline()) == ["v", "OK"]


def test_ask_is_followed_while_a_slot_migrates(fresh: LocalCluster) -> None:
    slot = key_slot(b"p0")
    source = local.master_of(fresh, "{p0}")
    target = next(p for p in fresh.masters_now() if p != source)
    view = {n.port: n.id for n in fresh.view()}
    with fresh.client(target) as t, fresh.client(source) as s:
        t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", view[source])
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", view[target])
        try:
            nodes = Nodes(local.sync_client(fresh))
            # A key the source does not have: it answers ASK, and the command goes
            # to the importing node after ASKING.
            assert nodes.execute([("SET", "new{p0}", "moved-here")]) == ["OK"]
            with t.pipeline(transaction=False) as pipe:
                pipe.execute_command("ASKING")
                pipe.get("new{p0}")
                pipe.execute_command("ASKING")
                pipe.delete("new{p0}")
                assert pipe.execute()[1] == "moved-here"
        finally:
            for client in (t, s):
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", view[source])


def test_readyz_is_503_while_a_partition_has_no_master(
    fresh: LocalCluster, on_fresh: Shop,
) -> None:
    shop = on_fresh
    app = api_app(shop.async_client(), partitions=local.PARTITIONS, redis_wait_replicas=1)
    master = fresh.masters_now()[0]
    replica = local.replica_of(fresh, master)
    with TestClient(app) as api:
        assert api.get("/readyz").status_code == 200
        local.kill(fresh, master)
        down = api.get("/readyz")
        assert down.status_code == 503, down.text
        assert f"127.0.0.1:{master}" in down.json()["detail"]
        assert down.headers["Retry-After"] == "1"
        local.promote(fresh, replica)
        deadline = time.monotonic() + 20
        while (ready := api.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.1)
