"""Taking stock across slots: the inventory worker stopped dead (as by kill -9)
before each round trip of its chain, then another replica finishing the job.

Two multi-line orders over products in four different slots, at 4
partitions: one that completes, and one whose second product is short. The
worker is stopped before round ``k`` (check; take 1; take 2, where the short
product is found; take 3 and give back; conclude), then the short product is
restocked, then a second replica claims the entries and handles them. Every
order ends completed, or refunded with all its stock back; no stock is taken
twice; and an outcome decided before the stop (the short product recorded)
is not changed by the restock.
"""

from __future__ import annotations

import pytest
import redis
import redis.asyncio

from shop import keys, topology
from tests import invariants
from tests.shop import Shop
from tests.test_slots import slot

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ROUNDS = 5  # check, take p1, take p2 | p4 (short), take p3 | give back, conclude


class Killed(BaseException):
    """What a kill -9 does to the worker: nothing more of it runs."""


@pytest.fixture
def four(real: redis.Redis, redis_server) -> Shop:  # type: ignore[no-untyped-def]
    return Shop(real, lambda: redis.asyncio.Redis.from_url(redis_server.url,
                                                           decode_responses=True), partitions=4)


@pytest.mark.parametrize("k", range(ROUNDS + 1))
def test_a_worker_stopped_between_any_two_sub_steps_leaves_nothing_half_done(
    four: Shop, k: int
) -> None:
    shop = four
    stock = {"p1": 100, "p2": 100, "p3": 100, "p4": 1}
    for product, units in stock.items():
        shop.product(product, units)
    assert len({slot(keys.product(p)) for p in stock}) == 4
    shop.customer("alice", 1_000_000)
    shop.customer("bob", 1_000_000)
    complete = shop.order("alice", ("p1", 2), ("p2", 3), ("p3", 1), ("p1", 1))
    short = shop.order("bob", ("p1", 5), ("p4", 5))
    shop.settle([topology.PAYMENT_GROUP])

    first = shop.consumer(topology.INVENTORY_GROUP, name="inventory-a")
    rounds: list[int] = []

    def stop_at(number: int) -> None:
        rounds.append(number)
        if number == k:
            raise Killed

    first.committer.before_round = stop_at
    try:
        first.run(once=True)
        assert k == ROUNDS, "the worker was never stopped"
    except Killed:
        assert k < ROUNDS
    take = shop.r.hgetall(keys.take("p4", short))
    decided = take.get("status") == "short"
    shop.r.hincrby(keys.product("p4"), keys.STOCK_FIELD, 100)  # a restock in between
    stock["p4"] += 100

    # The second replica takes over whatever the first left pending, at once.
    second = shop.consumer(topology.INVENTORY_GROUP, name="inventory-b", claim_idle_ms=0)
    second.run(once=True)
    shop.settle()

    assert shop.status(complete) == "completed"
    assert shop.status(short) == ("refunded" if decided else "completed")
    assert k == ROUNDS or rounds[-1] == k
    # Every unit is accounted for: the stock equation holds with each take once.
    counts = invariants.check(shop.r, {"p1": 100, "p2": 100, "p3": 100, "p4": stock["p4"]},
                              {"alice": 1_000_000, "bob": 1_000_000}, partitions=4)
    assert sum(counts.values()) == 2
    if decided:
        assert shop.stock("p1") == 100 - 3  # bob's 5 of p1 were given back
        assert shop.r.hget(keys.take("p1", short), "status") in ("returned", "void")
