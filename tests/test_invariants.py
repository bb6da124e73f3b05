"""The invariant checker itself catches what it is there to catch."""

from __future__ import annotations

import re

import pytest

from shop import keys, topology
from tests import invariants
from tests.shop import Shop

pytestmark = pytest.mark.integration


def check(shop: Shop) -> dict[str, int]:
    return invariants.check(
        shop.r, {"item1": 10}, {"alice": 10_000}, partitions=shop.topology.partitions
    )


def _settled(shop: Shop) -> str:
    shop.product("item1", stock=10)
    shop.customer("alice", 10_000)
    order = shop.order("alice", ("item1", 2))
    shop.settle()
    assert check(shop) == {"completed": 1}
    return order


def test_a_second_charge_breaks_the_books(real_shop: Shop) -> None:
    _settled(real_shop)
    real_shop.r.hincrby(real_shop.customer_key("alice"), keys.BALANCE_FIELD, -2000)
    with pytest.raises(AssertionError, match="alice: initial 10000 != balance 6000"):
        check(real_shop)


def test_stock_taken_twice_breaks_the_books(real_shop: Shop) -> None:
    _settled(real_shop)
    real_shop.r.hincrby(keys.product("item1"), keys.STOCK_FIELD, -2)
    with pytest.raises(AssertionError, match="item1: initial 10 != stock 6"):
        check(real_shop)


def test_a_duplicate_charge_event_is_counted(real_shop: Shop) -> None:
    _settled(real_shop)
    [paid] = real_shop.events(topology.PAYMENTS_COMPLETED)
    real_shop.add(topology.PAYMENTS_COMPLETED, paid)
    real_shop.settle()
    with pytest.raises(AssertionError, match="charged twice"):
        check(real_shop)


def test_an_unfinished_order_or_unread_entry_is_caught(real_shop: Shop) -> None:
    order = _settled(real_shop)
    real_shop.r.hset(real_shop.order_key(order), "status", "paid")
    with pytest.raises(AssertionError, match=f"order {order} is still paid"):
        check(real_shop)
    real_shop.r.hset(real_shop.order_key(order), "status", "completed")
    refunded = real_shop.customer_stream(topology.PAYMENTS_REFUNDED, "alice")
    real_shop.r.xadd(refunded, {"junk": "1"})
    with pytest.raises(AssertionError, match=re.escape(f"{refunded}/order-status: unread entries")):
        check(real_shop)
