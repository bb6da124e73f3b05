"""What a client is told when Redis stops answering around its POST, against
what really happened: Redis is frozen (SIGSTOP) while one order's script is on
the wire and another waits for a connection, then thawed."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx2
import pytest
import redis

from order_api import orders
from shop import keys, topology
from shopctl.redis_server import RedisServer, free_port
from streams.connection import connect_async
from tests.conftest import api_app
from tests.shop import Shop

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ORDER = {"customer_id": "alice", "lines": [{"product_id": "item1", "quantity": 1}]}


def test_a_post_while_redis_is_frozen_is_told_the_truth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RedisServer(free_port(), tmp_path, aof=False).start()
    assert server.proc is not None
    sync = redis.Redis.from_url(server.url, decode_responses=True)
    shop = Shop(sync, lambda: connect_async(server.url))
    shop.product("item1", stock=10)
    shop.customer("alice", 100_000)
    # One connection, one second to answer: the token check and the price read
    # (reads of their own) are left out, with API_AUTH=false and the prices
    # known, so that the script is the first thing sent.
    async def known_prices(_via: object, product_ids: list[str]) -> dict[str, int]:
        return dict.fromkeys(product_ids, 1000)

    monkeypatch.setattr(orders, "_prices", known_prices)
    client = connect_async(server.url, max_connections=1, timeout_s=1.0)
    app = api_app(client, api_auth=False)

    async def around_a_freeze() -> tuple[httpx2.Response, httpx2.Response, str]:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver",
                                      timeout=30) as http:
            warm = await http.post("/orders", json=ORDER)  # connected, script cached
            assert warm.status_code == 202
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                sent = asyncio.create_task(
                    http.post("/orders", json=ORDER, headers={"Idempotency-Key": "k-1"}))
                # Until its script has taken the one connection (redis-py's own
                # record of the connections lent out; the write follows at once).
                deadline = time.monotonic() + 10
                while not client.connection_pool._in_use_connections:
                    assert time.monotonic() < deadline, "the script never took the connection"
                    await asyncio.sleep(0.01)
                waiting = await http.post("/orders", json=ORDER | {"lines": [
                    {"product_id": "item1", "quantity": 2}]})
                unknown = await sent
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            return unknown, waiting, warm.json()["id"]

    try:
        unknown, waiting, warm_id = asyncio.run(around_a_freeze())

        # Told: nothing was done (try again), and: perhaps it was (find out).
        assert waiting.status_code == 503 and waiting.headers["retry-after"] == "1"
        assert "nothing was done" in waiting.json()["detail"]
        assert unknown.status_code == 504
        told = unknown.json()
        assert told["outcome"] == "unknown" and told["order_id"].startswith("ord_")
        assert unknown.headers["location"] == told["location"] == f"/orders/{told['order_id']}"
        assert "Do not place it again" in told["detail"]

        # What happened: the script on the wire ran once Redis woke up; the
        # other never reached it.
        deadline = time.monotonic() + 10
        while not sync.exists(keys.order(told["order_id"])):
            assert time.monotonic() < deadline, "the order whose outcome was unknown never came"
            time.sleep(0.05)
        assert sorted(sync.zrange(keys.orders_index(), 0, -1)) == sorted(
            [warm_id, told["order_id"]])
        assert sync.xlen(topology.ORDERS_CREATED) == 2

        # And resending with the same key, as the answer said, finds that order.
        async def resend() -> httpx2.Response:
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") \
                    as http:
                return await http.post("/orders", json=ORDER, headers={"Idempotency-Key": "k-1"})

        again = asyncio.run(resend())
        assert again.status_code == 202 and again.json()["id"] == told["order_id"]
        assert again.headers["idempotent-replayed"] == "true"
        assert sync.zcard(keys.orders_index()) == 2
    finally:
        sync.close()
        server.stop()
