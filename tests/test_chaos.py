"""The proof of "crash-proof": orders flow over HTTP while workers, the API
and Redis are killed with SIGKILL at random moments; then every order is final
and the books balance.

The real processes run under the launcher (``make up``'s), which starts again
whatever dies: two replicas of each worker and of the projector, the API, and
the embedded Redis with ``appendfsync always`` (so that SIGKILL loses no
acknowledged write; see the README on ``everysec``). Streams are trimmed to
two seconds of history as it runs. Customers send every order with an
``Idempotency-Key`` and send it again, same key, on any failure.

Poison on purpose, each checked to end where it should:
- junk written with redis-cli (``XADD orders.created * hello world``);
- a well-formed ``payment.completed`` for an order that does not exist;
- an order whose charge fails its first deliveries (its customer's balance is
  broken, then mended).

Disasters follow the orders, not the clock: one every ``ORDERS / DISASTERS``
accepted orders at most, so that a run slowed by its kills is not killed more
for it (the launcher's restart backoff grows with every quick death).

The gateway runs too, with ``webhooks.yaml``, and is killed like the
workers: every order's final status is delivered to a receiver at least
once, a repeated delivery is the same message under the same key, and
nothing is parked.

It runs at one partition and at four, the invariants checked across them.
``CHAOS_ORDERS`` and ``CHAOS_SEED`` change the size and the random choices.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest
import redis
import redis.asyncio

from gateway.signing import verify
from shop import keys, topology
from shop.events import OrderLine, PaymentCompleted
from shop.topology import customer_partition
from shopctl.redis_server import free_port
from streams.envelope import Envelope
from streams.topology import Topology
from streams.topology import dead as dead_of
from tests import invariants
from tests.chaos import Customers, ended_cleanly, listed, redis_cli, wait_for_quiet
from tests.conftest import bearer, make_token
from tests.receivers import Receiver
from tests.running import Running

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ORDERS = int(os.environ.get("CHAOS_ORDERS", "6000"))
SEED = int(os.environ.get("CHAOS_SEED", str(time.time_ns() % 1_000_000)))
SENDERS = 6
# At most this many disasters (kills, freezes) in a run, spread over its orders.
DISASTERS = 40
# Orders flow for at least this long, so that every planned disaster (the
# freeze at a quarter, Redis killed at half) happens while they do.
MIN_SENDING_S = 10.0
PACE_S = MIN_SENDING_S * SENDERS / ORDERS
PRODUCTS = {"item1": (2400, 300), "item2": (1200, 200), "item3": (500, 600)}
# Carol's own product, which no one else orders: her order waits out two failed
# charges, and the others must not have emptied its shelf meanwhile.
CAROLS = {"gift": (500, 2)}
# Eight customers with plenty, two who run out: some orders are declined.
CUSTOMERS = {**{f"c{i}": 5_000_000 for i in range(8)}, "c8": 30_000, "c9": 30_000}
WORKERS = ("payment-1", "payment-2", "inventory-1", "inventory-2", "projector-1", "projector-2",
           "gateway")
WEBHOOK_SECRET = "the-chaos-receivers-secret"
ENV = {
    "WORKER_CLAIM_IDLE_MS": "1000",  # a killed worker's messages are claimed after 1 s
    "WORKER_RETRY_AFTER_S": "0.2",
    "WORKER_MAX_DELIVERIES": "10",
    "WORKER_BLOCK_MS": "200",
    "STREAM_RETENTION_S": "2",
    "LOG_LEVEL": "WARNING",  # the test reads Redis, not the logs
    # The receiver is a thread of this test's process, starved of CPU by the
    # chaos: some deliveries time out and the endpoint is suspended, up to a
    # minute after failures in a row by default; here, at most 5 s.
    "WEBHOOK_SUSPEND_MAX_S": "5",
}


def pending_of(r: redis.Redis, stream: str, group: str, consumer: str) -> int:
    summary = r.xpending(stream, group)
    return sum(c["pending"] for c in summary["consumers"] or [] if c["name"] == consumer)


def freeze_until_claimed(
    shop: Running, r: redis.Redis, t: Topology, name: str = "payment-1"
) -> int:
    """Freeze a worker (SIGSTOP) holding a batch it read, until a survivor has
    claimed every message of it; thaw it; return how many it held.

    Whether a frozen process happens to hold messages is luck (it may be
    frozen between reads), so the batch is read in its name, as if it had read
    it just before it froze: the state a stuck consumer leaves behind."""
    deadline = time.monotonic() + 15
    while (pid := shop.children.get(name)) is None:
        assert time.monotonic() < deadline, f"{name} is not running"
        time.sleep(0.1)
    streams = t.partitioned(topology.ORDERS_CREATED)

    def holding() -> int:
        return sum(pending_of(r, stream, topology.PAYMENT_GROUP, name) for stream in streams)

    os.kill(pid, signal.SIGSTOP)
    try:
        while not (held := holding()):
            r.xreadgroup(topology.PAYMENT_GROUP, name, dict.fromkeys(streams, ">"), count=5)
            assert time.monotonic() < deadline, "no orders to read"
        while holding():
            assert time.monotonic() < deadline, f"nobody claimed what {name} held"
            time.sleep(0.05)
        return held
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize("partitions", [1, 4])
def test_kill_anything_at_any_moment_and_the_books_still_balance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], partitions: int,
    receivers: Callable[..., Receiver],
) -> None:
    rng = random.Random(SEED)
    hooks = receivers()
    t = topology.SHOP.with_partitions(partitions)
    redis_port, api_port = free_port(), free_port()
    base = f"http://127.0.0.1:{api_port}"
    shop = Running(
        tmp_path,
        redis_port,
        api_port,
        "--no-demo",
        "--payment-workers",
        "2",
        "--inventory-workers",
        "2",
        "--projectors",
        "2",
        "--redis-appendfsync",
        "always",
        "--partitions",
        str(partitions),
        "--gateway",
        "webhooks.yaml",
        env=ENV | {"WEBHOOK_URL": hooks.url + "/hooks", "WEBHOOK_SECRET": WEBHOOK_SECRET},
    )
    r = redis.Redis(port=redis_port, decode_responses=True, socket_timeout=5)
    started = time.monotonic()
    kills: Counter[str] = Counter()
    frozen: list[int] = []

    def thaw(pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(pid, signal.SIGCONT)
            frozen.remove(pid)

    try:
        shop.wait_for("ready: API on")
        with httpx2.Client(base_url=base, timeout=10, headers=shop.auth("operator")) as http:
            for pid, (price, stock) in (PRODUCTS | CAROLS).items():
                assert http.post(
                    "/products", json={"id": pid, "name": pid, "price_cents": price, "stock": stock}
                ).is_success
            for cid, balance in (CUSTOMERS | {"carol": 10_000}).items():
                assert http.post(
                    "/customers",
                    json={
                        "id": cid,
                        "name": cid,
                        "balance_cents": balance,
                        "email": f"{cid}@x.org",
                    },
                ).is_success
        connect = lambda: redis.asyncio.Redis(port=redis_port, decode_responses=True)  # noqa: E731
        tokens = {
            c: bearer(make_token(connect, "customer", c, partitions=partitions))
            for c in [*CUSTOMERS, "carol"]
        }
        bodies = [
            (
                f"chaos-{SEED}-{i}",
                {
                    "customer_id": rng.choice(list(CUSTOMERS)),
                    "lines": [
                        {"product_id": p, "quantity": rng.randint(1, 3)}
                        for p in rng.sample(list(PRODUCTS), rng.randint(1, 2))
                    ],
                },
            )
            for i in range(ORDERS)
        ]
        customers = Customers(base, bodies, tokens, PACE_S)
        senders = [
            threading.Thread(target=customers.send, args=(customers.bodies[i::SENDERS],))
            for i in range(SENDERS)
        ]
        for sender in senders:
            sender.start()

        # Poison, while orders flow.
        junk_stream = t.stream(topology.ORDERS_CREATED, t.tag(partitions - 1))
        redis_cli(redis_port, "XADD", junk_stream, "*", "hello", "world")
        ghost = Envelope.new(
            t,
            PaymentCompleted(
                customer_id="c0",
                amount_cents=500,
                lines=[OrderLine(product_id="item3", quantity=1, price_cents=500)],
            ),
            "ord_ghost",
        )
        ghost_stream = t.stream(topology.PAYMENTS_COMPLETED, t.tag_of("ord_ghost"))
        redis_cli(
            redis_port,
            "XADD",
            ghost_stream,
            "*",
            *(part for item in ghost.to_fields(t).items() for part in item),
        )
        carol_key = keys.customer("carol", t.tag(customer_partition("carol", partitions)))
        r.hset(carol_key, keys.BALANCE_FIELD, "broken")
        with httpx2.Client(base_url=base, timeout=10) as http:
            carol = http.post(
                "/orders",
                headers=tokens["carol"],
                json={"lines": [{"product_id": "gift", "quantity": 2}]},
            ).json()["id"]
        carol_stream = t.stream(topology.ORDERS_CREATED, t.tag_of(carol))
        carol_entry = next(i for i, f in r.xrange(carol_stream) if f.get("order_id") == carol)

        def deliveries() -> int:
            rows = r.xpending_range(
                carol_stream, topology.PAYMENT_GROUP, carol_entry, carol_entry, 1
            )
            return rows[0]["times_delivered"] if rows else 0

        def mend_carol() -> None:
            """Her balance is mended once her charge has failed twice: on its own
            thread, so that the chaos loop's long steps (the freeze) cannot make
            her wait out every delivery and be dead-lettered."""
            deadline, seen = time.monotonic() + 120, 0
            while time.monotonic() < deadline:
                try:
                    delivered = deliveries()
                except redis.ConnectionError:
                    delivered = seen  # Redis is coming back
                if delivered >= 2:
                    with contextlib.suppress(redis.ConnectionError):
                        r.hset(carol_key, keys.BALANCE_FIELD, 10_000)
                        return
                if seen and not delivered:
                    return  # no longer pending without us: the checks below will say why
                seen = max(seen, delivered)
                time.sleep(0.02)

        mender = threading.Thread(target=mend_carol, daemon=True)
        mender.start()
        redis_restarted_at = None
        freezes = 0
        stuck_held = 0
        disaster_at = 0  # accepted orders when the last disaster happened
        while any(s.is_alive() for s in senders):
            time.sleep(rng.uniform(0.1, 0.4))
            if len(customers.accepted) < disaster_at + ORDERS // DISASTERS:
                continue
            disaster_at = len(customers.accepted)
            try:
                if not stuck_held and len(customers.accepted) > ORDERS // 4:
                    stuck_held = freeze_until_claimed(shop, r, t)
                    continue
                if redis_restarted_at is None and len(customers.accepted) > ORDERS // 2:
                    os.kill(shop.children["redis"], signal.SIGKILL)
                    redis_restarted_at = len(customers.accepted)
                    kills["redis"] += 1
                    customers.planned_done.set()
                    continue
            except redis.ConnectionError:
                continue  # Redis is coming back
            children = shop.children
            victim = "api" if rng.random() < 0.1 else rng.choice(WORKERS)
            if victim not in children or children[victim] in frozen:
                continue
            if victim != "api" and rng.random() < 0.15:
                # Stuck, not dead: Redis delivers to its pending read, and a
                # survivor must claim those messages; when it wakes up, it
                # handles them again, which must change nothing.
                os.kill(children[victim], signal.SIGSTOP)
                frozen.append(children[victim])
                threading.Timer(2.5, thaw, (children[victim],)).start()
                freezes += 1
            else:
                os.kill(children[victim], signal.SIGKILL)
                kills[victim] += 1
        sending = time.monotonic() - started
        mender.join(120)
        assert len(customers.accepted) == ORDERS
        order_ids = [*customers.accepted.values(), carol]
        assert len(set(order_ids)) == ORDERS + 1, "one key gave two orders"
        wait_for_quiet(r, t, order_ids)
        settled = time.monotonic() - started

        initial_balance = CUSTOMERS | {"carol": 10_000}
        counts = invariants.check(
            r,
            {p: s for p, (_, s) in (PRODUCTS | CAROLS).items()},
            initial_balance,
            expect_dead_letters=True,
            partitions=partitions,
        )
        # Exactly the orders accepted, each once, whatever the retries.
        assert sum(r.zcard(keys.orders_index(tag)) for tag in t.tags()) == ORDERS + 1
        assert counts.get("failed", 0) == 0, (
            counts,
            [
                (stream, f.get("group"), f.get("order_id"), f.get("reason"))
                for stream in t.dead_streams()
                for _, f in r.xrange(stream)
            ],
        )
        # The poison ended where it should.
        junk = [f for _, f in r.xrange(dead_of(junk_stream))]
        assert sorted(f["group"] for f in junk) == ["order-status", "payment"]
        assert all(json.loads(f["original"]) == {"hello": "world"} for f in junk)
        ghosts = {f["group"]: f["reason"] for _, f in r.xrange(dead_of(ghost_stream))}
        assert ghosts == {
            "inventory": "order does not exist; no stock taken",
            "order-status": "order ord_ghost does not exist",
        }
        for stream in t.dead_streams():
            if stream not in (dead_of(junk_stream), dead_of(ghost_stream)):
                assert r.xlen(stream) == 0, stream
        assert r.hget(keys.order(carol, t.tag_of(carol)), "status") == "completed"
        assert r.get(t.delivery_error(topology.PAYMENT_GROUP, carol_stream, carol_entry))
        assert int(r.hget(carol_key, keys.BALANCE_FIELD)) == 9_000
        # Every order's final status went out, at least once; the ghost's
        # dead letters (two groups gave up on it) as one message.
        final = {o: r.hget(keys.order(o, t.tag_of(o)), "status") for o in order_ids}
        wanted = final | {"ord_ghost": "failed"}
        # Deliveries wait out what the chaos left: a dead gateway's lease (10 s), the
        # launcher's restart backoff (up to 10 s), a suspended receiver (up to 5 s here).
        waiting_since = time.monotonic()
        deadline = waiting_since + 120
        stores = t.partitioned("gateway.hooks")
        while not (delivered := webhooks(hooks)).keys() >= wanted.keys():
            assert time.monotonic() < deadline, (
                f"{len(wanted) - len(delivered)} not delivered; the receiver saw "
                f"{len(hooks.seen)} request(s), took {len(hooks.got)}; the gateway said:\n"
                + "\n".join([line for line in shop.lines if "gateway" in line][-30:])
                + f"\nits store: {[(s, r.xinfo_groups(s)) for s in stores]}\n"
                + "\n".join(undelivered(r, t, sorted(wanted.keys() - delivered.keys()))))
            time.sleep(0.1)
        assert delivered == wanted
        waited = time.monotonic() - waiting_since
        by_key: dict[str, set[bytes]] = {}
        for got in hooks.got:
            assert verify(WEBHOOK_SECRET, got.headers["X-Shop-Signature"], got.body)
            by_key.setdefault(got.headers["Idempotency-Key"], set()).add(got.body)
        assert all(len(bodies) == 1 for bodies in by_key.values())
        repeated = len(hooks.got) - len(by_key)
        assert len(by_key) == len(wanted)
        for tag in t.tags():
            assert r.xlen(f"gateway.hooks{tag}.dead") == 0
        # Streams were trimmed as the run went, and hold only recent history.
        for stream in t.partitioned(topology.ORDERS_CREATED):
            info = r.xinfo_stream(stream)
            assert info["length"] < info["entries-added"], stream
        assert redis_restarted_at is not None and stuck_held
    finally:
        for pid in list(frozen):
            thaw(pid)
        r.close()
        code = shop.stop()
    lines = ended_cleanly(shop, code)
    restarts = sum("started again" in line or "redis is back" in line for line in lines)
    claims = sum(": claimed " in line for line in lines)
    final, killed = listed(counts), listed(kills)
    with capsys.disabled():
        print(
            f"\n  chaos (seed {SEED}, {partitions} partition(s)): {ORDERS + 1} orders accepted "
            f"over HTTP in {sending:.1f}s "
            f"({customers.retries} retries with the same key, {customers.unknown} of them "
            f"after an unknown outcome (504), {customers.replays} answered "
            f"from an earlier try), {sum(kills.values())} SIGKILLs ({killed}), Redis killed "
            f"once at order {redis_restarted_at}, payment-1 frozen until a survivor claimed "
            f"the {stuck_held} message(s) it held, "
            f"{freezes} more workers frozen for 2.5s, {restarts} "
            f"restarts by the launcher, {claims} claims by survivors; all final "
            f"{settled:.1f}s after the start: {final}; poison: 4 dead letters, as planned; "
            f"{len(hooks.got)} webhooks for {ORDERS + 2} final statuses ({repeated} again "
            f"under their key after the gateway's kills), the last {waited:.1f}s after the "
            "saga settled; every invariant holds"
        )


def undelivered(r: redis.Redis, t: Topology, order_ids: list[str]) -> list[str]:
    """Where each order's final event went: its entry, whether the gateway's
    subscription still holds it, whether its store took its message."""
    said = []
    for order_id in order_ids[:10]:
        tag = t.tag_of(order_id)
        history = [json.loads(h) for h in r.hvals(keys.order_history(order_id, tag))]
        final = [h for h in history if h["type"] in ("inventory.reserved", "payment.refunded",
                                                        "payment.failed")]
        for h in final:
            pending = r.xpending_range(h["stream"], "gateway.final-statuses", h["entry_id"],
                                       h["entry_id"], 1)
            groups = {g["name"]: g["last-delivered-id"] for g in r.xinfo_groups(h["stream"])}
            stored = r.zscore(keys.store_seen(f"gateway.hooks{tag}"), h["event_id"])
            said.append(f"{order_id}: {h['type']} {h['stream']} {h['entry_id']} "
                        f"event {h['event_id']}; pending in the subscription: {pending}; "
                        f"its last delivered: {groups.get('gateway.final-statuses')}; "
                        f"stored: {stored}")
        if not final:
            said.append(f"{order_id}: no final event in its history {history}")
    dead = Counter(f.get("group") for stream in t.dead_streams() for _, f in r.xrange(stream))
    said.append(f"dead letters by group now: {dict(dead)}")
    return said


def webhooks(receiver: Receiver) -> dict[str, str]:
    """Each order's status as the webhooks delivered so far said it."""
    return {body["order_id"]: body["status"] for body in receiver.bodies()}
