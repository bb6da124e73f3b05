"""Dead letters from the command line: list, replay, purge (real server)."""

from __future__ import annotations

import pytest
import redis

from shop import keys, topology
from shopctl.cli import main
from shopctl.redis_server import RedisServer
from streams.topology import dead as dead_of
from tests.shop import Shop

pytestmark = pytest.mark.integration


def shopctl(url: str, capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    """``shopctl dead ...`` against the server or the cluster at ``url``."""
    assert main(["dead", *args, "--redis-url", url]) == 0
    return capsys.readouterr().out.splitlines()


def test_a_replayed_dead_letter_that_now_succeeds_completes_its_order(
    real_shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    real_shop.product("item1", stock=10)
    real_shop.customer("alice", 10_000)
    order = real_shop.order("alice", ("item1", 2))
    # Someone broke Alice's balance: every charge attempt raises in Lua.
    real_shop.r.hset(real_shop.customer_key("alice"), keys.BALANCE_FIELD, "oops")
    real_shop.settle()
    assert real_shop.status(order) == "failed"
    assert real_shop.r.hget(real_shop.order_key(order), "reason").startswith(
        "payment stage: gave up after 5 deliveries; last error: ResponseError:"
    )
    [line, total] = shopctl(real_shop.url, capsys, "list")
    created = real_shop.stream_of(topology.ORDERS_CREATED, order)
    assert line.startswith(f"{created}.dead/")
    assert f"order={order}  group=payment  deliveries=6" in line
    assert total == "1 dead letter(s)"

    real_shop.r.hset(real_shop.customer_key("alice"), keys.BALANCE_FIELD, 10_000)  # fixed
    [replayed] = shopctl(real_shop.url, capsys, "replay", line.split()[0])
    assert replayed.startswith(f"{line.split()[0]}: replayed as {created} ")
    real_shop.settle()
    assert real_shop.status(order) == "completed"
    assert real_shop.r.hget(real_shop.order_key(order), "reason") == ""
    assert real_shop.balance("alice") == 8_000 and real_shop.stock("item1") == 8
    assert real_shop.events(dead_of(topology.ORDERS_CREATED)) == []
    # Only the payment was missing: the projector had recorded order.created
    # already and recorded it once.
    assert len(real_shop.events(topology.PAYMENTS_COMPLETED)) == 1


def test_an_entry_two_groups_gave_up_on_is_replayed_once_and_purge_empties(
    real_shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = real_shop.streams(topology.ORDERS_CREATED)[-1]
    real_shop.r.xadd(junk, {"hello": "world"})
    real_shop.settle()
    assert real_shop.r.xlen(dead_of(junk)) == 2  # payment and order-status
    results = shopctl(real_shop.url, capsys, "replay", "--all")
    assert len(results) == 2
    assert sum(f"replayed as {junk} " in r for r in results) == 1
    assert sum("deleted, replayed once" in r for r in results) == 1
    assert real_shop.r.xlen(junk) == 2  # the junk, and its one replay
    real_shop.settle()  # still junk: dead again, by both groups
    assert real_shop.r.xlen(dead_of(junk)) == 2
    assert shopctl(real_shop.url, capsys, "purge", "--all", "--stream", "orders.created") == [
        "purged 2 dead letter(s)"
    ]
    assert shopctl(real_shop.url, capsys, "list") == ["0 dead letter(s)"]
    # The projector's group on the dead stream survives a purge.
    assert real_shop.r.xinfo_groups(dead_of(junk))


def test_bad_references_are_clear_errors(
    real: redis.Redis, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["dead", "replay", "orders.created/1-0", "--redis-url", redis_server.url])
    assert exit_.value.code == 2
    assert "the part before '/' must be one of orders.created.dead" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["dead", "purge", "--redis-url", redis_server.url])
    assert "name dead letters (REF ...) or give --all" in capsys.readouterr().err
    assert shopctl(redis_server.url, capsys, "replay", "orders.created.dead/1-0") == [
        "orders.created.dead/1-0: no such dead letter"
    ]
