"""The proof of failover: orders flow over HTTP into the shop on a real local
Redis Cluster (``shopctl up --cluster``: 3 masters and 3 replicas of the
embedded server, AOF fsynced once a second, 12 partitions), two replicas of
each worker, while workers are killed with SIGKILL at random and one master
is killed mid-run. Its replica is promoted; the launcher starts the old
master again once it has been, and it rejoins as a replica. Then every order
that was answered 202 is final, the books balance, nothing was charged,
refunded or taken twice, nothing is pending, and the only dead letters are
the junk written on purpose.

Orders have two or three lines over six products, whose slots lie on every
master: taking stock crosses masters, the step a failover could tear.

``CLUSTER_CHAOS_ORDERS`` and ``CHAOS_SEED`` change the size and the choices.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx2
import pytest
import redis
import redis.asyncio
from redis.crc import key_slot

from shop import keys, topology
from shopctl.cluster import free_base, masters_of, nodes_of
from shopctl.redis_server import free_port
from streams.topology import dead as dead_of
from tests import invariants
from tests.chaos import Customers, ended_cleanly, listed, redis_cli, wait_for_quiet
from tests.conftest import bearer, make_token
from tests.running import Running

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ORDERS = int(os.environ.get("CLUSTER_CHAOS_ORDERS", "3000"))
SEED = int(os.environ.get("CHAOS_SEED", str(time.time_ns() % 1_000_000)))
SENDERS = 6
PARTITIONS = 12  # 4 per master
KILLS = 25  # workers killed in a run, at most, spread over its orders
MIN_SENDING_S = 12.0
NODE_TIMEOUT_MS = 1500
PRODUCTS = {f"sku{i}": (300 + 100 * i, 900) for i in range(6)}
CUSTOMERS = {**{f"c{i}": 5_000_000 for i in range(8)}, "c8": 40_000, "c9": 40_000}
WORKERS = ("payment-1", "payment-2", "inventory-1", "inventory-2", "projector-1", "projector-2")
ENV = {
    "WORKER_CLAIM_IDLE_MS": "1000",
    "WORKER_RETRY_AFTER_S": "0.2",
    "WORKER_MAX_DELIVERIES": "10",
    "WORKER_BLOCK_MS": "200",
    "STREAM_RETENTION_S": "2",
    "LOG_LEVEL": "WARNING",
    # Shorter than the failover: orders to the dead master's partitions are
    # answered 503 or 504 meanwhile, and resent with their key.
    "API_REDIS_TIMEOUT_S": "1",
}


def roles(port: int) -> dict[int, str]:
    """Each node's role as ``port`` sees them: master (serving slots) or replica."""
    with redis.Redis(port=port, decode_responses=True, socket_timeout=1) as c:
        return {n.port: "master" if n.master and n.slots else "replica"
                for n in nodes_of(c) if not n.failed}


def test_a_master_killed_mid_run_loses_no_accepted_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(SEED)
    t = topology.SHOP.with_partitions(PARTITIONS)
    base, api_port = free_base(), free_port()
    ports = list(range(base, base + 6))
    api = f"http://127.0.0.1:{api_port}"
    shop = Running(
        tmp_path, free_port(), api_port, "--cluster", "--cluster-port", str(base),
        "--cluster-node-timeout-ms", str(NODE_TIMEOUT_MS), "--no-demo",
        "--payment-workers", "2", "--inventory-workers", "2", "--projectors", "2", env=ENV,
    )
    r: redis.RedisCluster | None = None
    kills: Counter[str] = Counter()
    masters_after: list[int] = []
    counts: dict[str, int] = {}
    try:
        shop.wait_for("ready: API on", timeout_s=90)
        r = redis.RedisCluster(host="127.0.0.1", port=base, decode_responses=True)
        masters_of_products = {r.get_node_from_key(keys.product(p)).port for p in PRODUCTS}
        assert len(masters_of_products) == 3, "the products' slots are not on every master"
        with httpx2.Client(base_url=api, timeout=10, headers=shop.auth("operator")) as http:
            for pid, (price, stock) in PRODUCTS.items():
                assert http.post("/products", json={
                    "id": pid, "name": pid, "price_cents": price, "stock": stock}).is_success
            for cid, balance in CUSTOMERS.items():
                assert http.post("/customers", json={
                    "id": cid, "name": cid, "balance_cents": balance,
                    "email": f"{cid}@x.org"}).is_success

        def connect() -> redis.asyncio.RedisCluster:
            return redis.asyncio.RedisCluster(host="127.0.0.1", port=base,
                                              decode_responses=True)

        tokens = {c: bearer(make_token(connect, "customer", c, partitions=PARTITIONS))
                  for c in CUSTOMERS}
        bodies = [
            (f"cluster-chaos-{SEED}-{i}", {
                "customer_id": rng.choice(list(CUSTOMERS)),
                "lines": [{"product_id": p, "quantity": rng.randint(1, 3)}
                          for p in rng.sample(list(PRODUCTS), rng.randint(2, 3))],
            })
            for i in range(ORDERS)
        ]
        customers = Customers(api, bodies, tokens, MIN_SENDING_S * SENDERS / ORDERS)
        senders = [threading.Thread(target=customers.send, args=(bodies[i::SENDERS],))
                   for i in range(SENDERS)]
        started = time.monotonic()
        for sender in senders:
            sender.start()

        # Junk on purpose, while orders flow: dead-lettered by both groups that read it.
        junk_stream = t.stream(topology.ORDERS_CREATED, t.tag(5))
        redis_cli(base, "-c", "XADD", junk_stream, "*", "hello", "world")

        killed_master: int | None = None
        killed_at = 0
        next_kill = 0
        while any(s.is_alive() for s in senders):
            time.sleep(rng.uniform(0.1, 0.3))
            accepted = len(customers.accepted)
            if killed_master is None and accepted > ORDERS // 3:
                # A master serving partitions, killed while orders flow through it.
                killed_master = rng.choice(masters_of(ports))
                os.kill(shop.children[f"redis-{killed_master}"], signal.SIGKILL)
                killed_at = accepted
                customers.planned_done.set()
                continue
            if accepted < next_kill:
                continue
            next_kill = accepted + ORDERS // KILLS
            victim = rng.choice(WORKERS)
            if (pid := shop.children.get(victim)) is not None:
                os.kill(pid, signal.SIGKILL)
                kills[victim] += 1
        sending = time.monotonic() - started
        assert killed_master is not None
        assert len(customers.accepted) == ORDERS
        order_ids = list(customers.accepted.values())
        assert len(set(order_ids)) == ORDERS, "one key gave two orders"

        # The replica took over, and the old master came back as its replica.
        deadline = time.monotonic() + 60
        while True:
            live = next(p for p in ports if p != killed_master)
            seen = roles(live)
            if seen.get(killed_master) == "replica" and len(
                    [p for p, role in seen.items() if role == "master"]) == 3:
                break
            assert time.monotonic() < deadline, f"no failover of {killed_master}: {seen}"
            time.sleep(0.2)
        masters_after = sorted(p for p, role in seen.items() if role == "master")

        wait_for_quiet(r, t, order_ids)
        settled = time.monotonic() - started
        counts = invariants.check(
            r, {p: s for p, (_, s) in PRODUCTS.items()}, CUSTOMERS,
            expect_dead_letters=True, partitions=PARTITIONS,
        )
        assert sum(r.zcard(keys.orders_index(tag)) for tag in t.tags()) == ORDERS
        assert counts.get("failed", 0) == 0, counts
        junk = [f for _, f in r.xrange(dead_of(junk_stream))]
        assert sorted(f["group"] for f in junk) == ["order-status", "payment"]
        for stream in t.dead_streams():
            if stream != dead_of(junk_stream):
                assert r.xlen(stream) == 0, stream
        assert key_slot(junk_stream.encode()) == key_slot(dead_of(junk_stream).encode())
    finally:
        if r is not None:
            r.close()
        code = shop.stop()
    lines = ended_cleanly(shop, code)
    restarts = sum("started again" in line for line in lines)
    waits = sum(" waits: " in line for line in lines)
    final, killed = listed(counts), listed(kills)
    with capsys.disabled():
        print(
            f"\n  cluster chaos (seed {SEED}, 3 masters + 3 replicas, {PARTITIONS} partitions): "
            f"{ORDERS} orders of 2-3 lines accepted over HTTP in {sending:.1f}s "
            f"({customers.retries} retries with the same key, {customers.unknown} after an "
            f"unknown outcome (504), {customers.replays} answered from an earlier try); "
            f"{sum(kills.values())} workers SIGKILLed ({killed}); master {killed_master} "
            f"SIGKILLed at order {killed_at}: 1 failover (its replica promoted: masters now "
            f"{', '.join(map(str, masters_after))}), the old "
            f"master back as a replica; {restarts} restarts by the launcher, {waits} messages "
            f"waited for a node; all final {settled:.1f}s after the start: {final}; junk: 2 "
            "dead letters, as planned; every invariant holds"
        )
