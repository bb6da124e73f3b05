"""The gateway's subscriptions and stores on the running system: the bundled
``webhooks.yaml`` (every final status, signed, with failover to a second
receiver and back), and a gateway killed with SIGKILL in the middle of its
deliveries: every event delivered at least once, in order per order, a
duplicate only after the crash and with its same idempotency key."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest
import redis

from gateway.signing import verify
from shopctl.redis_server import free_port
from tests.receivers import Receiver, answer
from tests.running import Running

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def wait_until(check: Callable[[], bool], what: Callable[[], str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what()
        time.sleep(0.05)


def place(shop: Running, api_port: int, orders: list[tuple[str, str, int]]) -> list[str]:
    with httpx2.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as http:
        placed = [http.post("/orders", headers=shop.auth(customer), json={
            "lines": [{"product_id": product, "quantity": quantity}]})
            for customer, product, quantity in orders]
    assert all(p.status_code == 202 for p in placed), [p.text for p in placed]
    return [p.json()["id"] for p in placed]


def test_every_final_status_is_delivered_signed_with_failover_and_back(
        tmp_path: Path, receivers: Callable[..., Receiver]) -> None:
    main, fallback = receivers(behave=answer(503)), receivers()
    api_port = free_port()
    secret = "the-receivers-shared-secret"
    shop = Running(tmp_path, free_port(), api_port, "--gateway", "webhooks.yaml",
                   env={"WEBHOOK_URL": main.url + "/hooks",
                        "WEBHOOK_FALLBACK_URL": fallback.url + "/hooks",
                        "WEBHOOK_SECRET": secret})
    try:
        shop.wait_for("ready: API on")
        completed, refunded, rejected = place(shop, api_port, [
            ("alice", "item1", 1), ("alice", "item2", 60), ("bob", "item1", 1)])
        wait_until(lambda: len(fallback.got) == 3, lambda: "\n".join(shop.lines))
        # The receiver is back: once its suspension is over, it is used again.
        main.behave = answer(200)
        with redis.Redis.from_url(shop.redis_url, decode_responses=True) as r:
            state = json.loads(r.hget("shop:gateway:endpoints", "webhooks/receiver") or "{}")
            assert state["state"] == "suspended" and state["last_error"] == "answered 503"
            time.sleep(1.1)  # webhooks.yaml suspends a receiver for 1 s first
            # A message about an order that the inventory worker cannot read: the
            # saga dead-letters it, and the order ends "failed".
            r.xadd("payments.completed", {"type": "payment.completed", "event_id": "e-broken",
                                          "order_id": "ord_00000000000000ff", "occurred_at":
                                          "2026-12-02T00:00:00Z", "causation_id": "", "v": "1",
                                          "data": "{oops"})
        wait_until(lambda: len(main.got) >= 1, lambda: "\n".join(shop.lines))
    finally:
        assert shop.stop() == 0
    statuses = {body["order_id"]: body["status"] for body in fallback.bodies() + main.bodies()}
    assert statuses == {completed: "completed", refunded: "refunded", rejected: "rejected",
                        "ord_00000000000000ff": "failed"}
    # Two groups gave up on the broken entry: one message, delivered once.
    [failed] = [b for b in main.bodies() if b["status"] == "failed"]
    assert failed["reason"].startswith("bad data for payment.completed: data: Invalid JSON")
    for got in fallback.got + main.got:
        assert verify(secret, got.headers["X-Shop-Signature"], got.body)
        assert got.headers["Idempotency-Key"] == got.json()["event_id"]
        assert got.path == "/hooks"
    assert len(main.seen) >= 2  # tried, suspended, tried again once it answered


ALL_EVENTS = """
name: all-events
endpoints:
  receiver:
    url: ${RECEIVER_URL}
    timeout_s: 2
    retries: 0
    suspend: {initial_s: 0.2, factor: 2, max_s: 1}
subscriptions:
  everything:
    events: [order.created, payment.completed, payment.failed, inventory.reserved,
             inventory.rejected, payment.refunded]
    sequence:
      - transform:
          body: {order_id: "{{ request.order_id }}", event: "{{ request.event }}",
                 event_id: "{{ request.id }}"}
      - store: out
stores:
  out:
    endpoint: receiver
    sign: {secret: "${WEBHOOK_SECRET}"}
    backoff: {initial_s: 0.1, factor: 2, max_s: 1}
"""
SAGA = ["order.created", "payment.completed", "inventory.reserved"]


def test_a_gateway_killed_mid_delivery_loses_nothing_and_keeps_each_orders_order(
        tmp_path: Path, receivers: Callable[..., Receiver]) -> None:
    slow = receivers(behave=answer(200, delay_s=0.02))
    config = tmp_path / "all-events.yaml"
    config.write_text(ALL_EVENTS)
    api_port = free_port()
    shop = Running(tmp_path / "data", free_port(), api_port, "--partitions", "4",
                   "--gateway", str(config), env={"RECEIVER_URL": slow.url})
    try:
        shop.wait_for("ready: API on")
        orders = place(shop, api_port, [("alice", "item1", 1)] * 30)
        wait_until(lambda: len(slow.got) >= 20, lambda: "\n".join(shop.lines))
        killed = shop.children["gateway"]
        os.kill(killed, signal.SIGKILL)
        crashed_after = len(slow.seen)
        wait_until(lambda: shop.children.get("gateway") not in (None, killed),
                   lambda: "\n".join(shop.lines))
        expected = {(o, e) for o in orders for e in SAGA}
        wait_until(lambda: {(g.json()["order_id"], g.json()["event"]) for g in slow.got}
                   >= expected, lambda: f"{len(slow.got)} delivered:\n" + "\n".join(shop.lines))
    finally:
        assert shop.stop() == 0
    assert crashed_after < len(slow.seen), "the crash came after every delivery"
    keys = [g.headers["Idempotency-Key"] for g in slow.got]
    # At least once: every event of every order; once each, but for what the
    # killed gateway had in flight (one message per partition at most).
    assert len(set(keys)) == len(expected) == 90
    repeated = {k for k in keys if keys.count(k) > 1}
    assert len(repeated) <= 4
    for key in repeated:  # the same message, again, with its key
        bodies = {g.body for g in slow.got if g.headers["Idempotency-Key"] == key}
        assert len(bodies) == 1
    # In order per order: each order's events arrived as its saga ran.
    first_seen: dict[str, list[str]] = {}
    for got in slow.got:
        body = got.json()
        if body["event"] not in first_seen.setdefault(body["order_id"], []):
            first_seen[body["order_id"]].append(body["event"])
    assert all(events == SAGA for events in first_seen.values()), first_seen
    assert any("gateway was killed by SIGKILL" in line for line in shop.lines)
    assert any("gateway started again" in line for line in shop.lines)
