"""Every atomic step stays in one hash slot, by Redis Cluster's own rule.

A client that records every script it sends (EVAL/EVALSHA; the catalog's
MULTI/EXEC transactions each touch one record, and a customer's index in its
tag) runs the whole saga at 4 partitions: multi-line orders across
products, a decline, a rejection and its refund, the catalog and token
routes. Each step's keys are mapped to their slot with CRC16 (XMODEM) of the
hash tag, mod 16384; a step whose keys span two slots fails the test.
"""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
import pytest
from fastapi.testclient import TestClient

from streams import nodes
from tests.conftest import api_app, bearer, make_token
from tests.shop import Shop

pytestmark = pytest.mark.unit


def crc16(data: bytes) -> int:
    """CRC16/XMODEM, the checksum Redis Cluster hashes keys with."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def slot(key: str) -> int:
    """A key's slot: of the text between the first '{' and the next '}', when
    that is not empty; else of the whole key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc16(key.encode()) % 16384


class Recorder:
    """Notes the keys of every script call and transaction, by name."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, list[str]]] = []

    def script(self, args: tuple[Any, ...]) -> None:
        command = str(args[0]).upper()
        if command in ("EVAL", "EVALSHA"):
            count = int(args[2])
            self.steps.append((f"{command} {str(args[1])[:12]}", [str(k) for k in
                                                                  args[3 : 3 + count]]))

    def spanning(self) -> list[tuple[str, dict[int, list[str]]]]:
        bad = []
        for name, step_keys in self.steps:
            slots: dict[int, list[str]] = {}
            for key in step_keys:
                slots.setdefault(slot(key), []).append(key)
            if len(slots) > 1:
                bad.append((name, slots))
        return bad


def test_the_slot_rule_is_redis_clusters() -> None:
    # The examples of the Redis Cluster specification.
    assert crc16(b"123456789") == 0x31C3
    assert slot("{user1000}.following") == slot("{user1000}.followers")
    assert slot("foo{}{bar}") == crc16(b"foo{}{bar}") % 16384
    assert slot("foo{{bar}}zap") == crc16(b"{bar") % 16384
    assert slot("foo{bar}{zap}") == crc16(b"bar") % 16384
    # And a step across two partitions is caught.
    recorder = Recorder()
    recorder.script(("EVALSHA", "abc", 2, "shop:order:o{p0}", "orders.created{p1}", "arg"))
    assert [name for name, _ in recorder.spanning()] == ["EVALSHA abc"]


def recording(recorder: Recorder, cls: type) -> type:
    class Recorded(cls):  # type: ignore[misc, valid-type]
        def execute_command(self, *args: Any, **options: Any) -> Any:
            recorder.script(args)
            return super().execute_command(*args, **options)

    return Recorded


def test_no_step_spans_two_slots_at_four_partitions(
    fake_server: fakeredis.FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    sync_cls = recording(recorder, fakeredis.FakeRedis)
    async_cls = recording(recorder, fakeredis.FakeAsyncRedis)
    sync = sync_cls(server=fake_server, decode_responses=True)
    # The runner sends its batches past redis-py's command path (one write):
    # record what it sends there too.
    sent = nodes.send_all

    def send_all(client: Any, commands: Any) -> Any:
        for command in commands:
            recorder.script(command)
        return sent(client, commands)

    shop = Shop(sync, lambda: async_cls(server=fake_server, decode_responses=True), partitions=4)
    monkeypatch.setattr(nodes, "send_all", send_all)
    for product, stock in (("item1", 100), ("item2", 1), ("item3", 50), ("item4", 100)):
        shop.product(product, stock)
    for customer in ("alice", "bob", "carol", "dave", "erin"):
        shop.customer(customer, 1_000_000)
    shop.customer("poor", 1)
    orders = [shop.order(c, ("item1", 1), ("item3", 2), ("item4", 1))
              for c in ("alice", "bob", "carol", "dave", "erin")]
    orders.append(shop.order("alice", ("item1", 1), ("item2", 5)))  # short: given back
    orders.append(shop.order("poor", ("item1", 1)))  # declined
    shop.settle()
    assert sorted(shop.status(o) for o in orders) == sorted(
        ["completed"] * 5 + ["refunded", "rejected"])
    assert len({shop.order_tag(o) for o in orders}) > 1  # spread over the partitions

    # The API's own steps: catalog, customers, tokens, intake with a key.
    client = async_cls(server=fake_server, decode_responses=True)
    operator = bearer(make_token(lambda: async_cls(server=fake_server, decode_responses=True),
                                 "operator", partitions=4))
    with TestClient(api_app(client, partitions=4), headers=operator) as api:
        assert api.post("/products", json={"id": "item9", "name": "Nine", "price_cents": 5,
                                           "stock": 3}).status_code == 201
        assert api.patch("/products/item9", json={"price_cents": 6}).status_code == 200
        assert api.post("/products/item9/restock", json={"quantity": 2}).status_code == 200
        assert api.post("/products/item9/adjustments",
                        json={"delta": -1, "reason": "counted"}).status_code == 200
        assert api.post("/customers", json={"id": "zoe", "name": "Zoe", "email": "z@x.example",
                                            "balance_cents": 100}).status_code == 201
        zoe = bearer(make_token(lambda: async_cls(server=fake_server, decode_responses=True),
                                "customer", "zoe", partitions=4))
        placed = api.post("/orders", headers=zoe | {"Idempotency-Key": "k1"},
                          json={"lines": [{"product_id": "item9", "quantity": 1}]})
        assert placed.status_code == 202, placed.text
        assert api.get(f"/orders/{placed.json()['id']}", headers=zoe).status_code == 200
    asyncio.run(client.aclose())

    assert len(recorder.steps) > 30
    assert recorder.spanning() == []
