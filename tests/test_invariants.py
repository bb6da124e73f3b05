"""The invariant checker itself catches what it is there to catch."""

from __future__ import annotations

import pytest

from shop import keys, topology
from tests import invariants
from tests.shop import Shop

pytestmark = pytest.mark.integration


def _settled(shop: Shop) -> str:
    shop.product("item1", stock=10)
    shop.customer("alice", 10_000)
    order = shop.order("alice", ("item1", 2))
    shop.settle()
    assert invariants.check(shop.r, {"item1": 10}, {"alice": 10_000}) == {"completed": 1}
    return order


def test_a_second_charge_breaks_the_books(real_shop: Shop) -> None:
    _settled(real_shop)
    real_shop.r.hincrby(keys.customer("alice"), keys.BALANCE_FIELD, -2000)
    with pytest.raises(AssertionError, match="alice: initial 10000 != balance 6000"):
        invariants.check(real_shop.r, {"item1": 10}, {"alice": 10_000})


def test_stock_taken_twice_breaks_the_books(real_shop: Shop) -> None:
    _settled(real_shop)
    real_shop.r.hincrby(keys.product("item1"), keys.STOCK_FIELD, -2)
    with pytest.raises(AssertionError, match="item1: initial 10 != stock 6"):
        invariants.check(real_shop.r, {"item1": 10}, {"alice": 10_000})


def test_a_duplicate_charge_event_is_counted(real_shop: Shop) -> None:
    _settled(real_shop)
    [(_, paid)] = real_shop.r.xrange(topology.PAYMENTS_COMPLETED)
    real_shop.r.xadd(topology.PAYMENTS_COMPLETED, paid)
    real_shop.settle()
    with pytest.raises(AssertionError, match="charged twice"):
        invariants.check(real_shop.r, {"item1": 10}, {"alice": 10_000})


def test_an_unfinished_order_or_unread_entry_is_caught(real_shop: Shop) -> None:
    order = _settled(real_shop)
    real_shop.r.hset(keys.order(order), "status", "paid")
    with pytest.raises(AssertionError, match=f"order {order} is still paid"):
        invariants.check(real_shop.r, {"item1": 10}, {"alice": 10_000})
    real_shop.r.hset(keys.order(order), "status", "completed")
    real_shop.r.xadd(topology.PAYMENTS_REFUNDED, {"junk": "1"})
    with pytest.raises(AssertionError, match="payments.refunded/order-status: unread entries"):
        invariants.check(real_shop.r, {"item1": 10}, {"alice": 10_000})
