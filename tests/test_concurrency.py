"""200 orders at once for 50 in stock, through HTTP, with two replicas of each
worker running: exactly 50 complete, 150 are refunded, and every invariant
holds."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx2
import pytest

from shop import keys, topology
from shop.statuses import FINAL_STATUSES
from tests import invariants
from tests.conftest import api_app, bearer, make_token
from tests.shop import WORKERS, Shop, statuses

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ORDERS, STOCK, CUSTOMERS = 200, 50, 20


def tokens_of(shop: Shop, customers: list[str]) -> dict[str, dict[str, str]]:
    partitions = shop.topology.partitions
    return {c: bearer(make_token(shop.async_client, "customer", c, partitions=partitions))
            for c in customers}


async def place_all(shop: Shop, customers: list[str]) -> list[httpx2.Response]:
    tokens = await asyncio.to_thread(tokens_of, shop, customers)
    client = shop.async_client()
    transport = httpx2.ASGITransport(app=api_app(client, **shop.api_settings()))
    async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as http:
        answers = await asyncio.gather(
            *(
                http.post(
                    "/orders",
                    headers=tokens[customers[i % len(customers)]],
                    json={
                        "lines": [{"product_id": "item2", "quantity": 1}],
                    },
                )
                for i in range(ORDERS)
            )
        )
    await client.aclose()
    return answers


def test_200_orders_at_once_for_50_in_stock(
    real_shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    real_shop.product("item2", stock=STOCK, price_cents=1200)
    customers = [f"c{i}" for i in range(CUSTOMERS)]
    for customer in customers:
        real_shop.customer(customer, 1_000_000)

    replicas = {
        topology.PAYMENT_GROUP: 2,
        topology.INVENTORY_GROUP: 2,
        topology.ORDER_STATUS_GROUP: 1,
    }
    partitions = real_shop.topology.partitions
    consumers = [
        WORKERS[group].consumer(
            real_shop.sync_client(),
            partitions,
            name=f"{group}-{n}",
            block_ms=50,
            wait_replicas=real_shop.wait_replicas,
        )
        for group, count in replicas.items()
        for n in range(count)
    ]
    threads = [threading.Thread(target=c.run, daemon=True) for c in consumers]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    try:
        answers = asyncio.run(place_all(real_shop, customers))
        accepted = time.perf_counter() - started
        assert [a.status_code for a in answers] == [202] * ORDERS
        ids = [a.json()["id"] for a in answers]
        deadline = time.monotonic() + 60
        while not all(s in FINAL_STATUSES for s in statuses(real_shop.r, ids, partitions)):
            assert time.monotonic() < deadline, "orders did not settle"
            time.sleep(0.01)
        settled = time.perf_counter() - started
    finally:
        for consumer in consumers:
            consumer.stop()
        for thread in threads:
            thread.join(5)

    counts = invariants.check(
        real_shop.r, {"item2": STOCK}, dict.fromkeys(customers, 1_000_000), partitions=partitions
    )
    assert counts == {"completed": STOCK, "refunded": ORDERS - STOCK}
    assert real_shop.stock("item2") == 0
    with capsys.disabled():
        print(
            f"\n  concurrency ({partitions} partition(s){' on a cluster' * real_shop.cluster}): "
            f"{ORDERS} orders accepted in "
            f"{accepted:.2f}s, all final in "
            f"{settled:.2f}s ({ORDERS / settled:.0f} orders/s settled, 2+2+1 consumers in threads)"
        )


def test_racing_requests_with_one_idempotency_key_place_one_order(real_shop: Shop) -> None:
    real_shop.product("item2", stock=STOCK, price_cents=1200)
    real_shop.customer("alice", 1_000_000)

    alice = tokens_of(real_shop, ["alice"])["alice"]

    async def race() -> list[httpx2.Response]:
        client = real_shop.async_client()
        transport = httpx2.ASGITransport(app=api_app(client, **real_shop.api_settings()))
        body = {"lines": [{"product_id": "item2", "quantity": 1}]}
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as http:
            answers = await asyncio.gather(
                *(
                    http.post(
                        "/orders", json=body, headers={"Idempotency-Key": "retry-me", **alice}
                    )
                    for _ in range(20)
                )
            )
        await client.aclose()
        return answers

    answers = asyncio.run(race())
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 19
    assert sum(real_shop.r.zcard(keys.orders_index(t)) for t in real_shop.topology.tags()) == 1
    assert len(real_shop.events(topology.ORDERS_CREATED)) == 1
