"""Both MCP servers through the SDK's real client, in memory, over the real
API app on fakeredis (the workers run in between, as the test says)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

import fakeredis
import httpx2
import pytest
import redis.asyncio
from mcp import Client

from gateway.endpoints import State
from mcp_servers import ops, shop
from mcp_servers.api import ShopApi
from shop import keys, topology
from shopctl.redis_server import free_port
from tests.conftest import api_app, make_token
from tests.shop import Shop

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def saga(fake: Any, afake: redis.asyncio.Redis) -> Shop:
    """Runs the workers on the same fake server, when a test says so."""
    driver = Shop(fake, lambda: afake)
    driver.product("item1", stock=100, price_cents=2400)
    driver.product("item2", stock=3, price_cents=1200)
    driver.customer("alice", 1_000_000)
    driver.customer("bob", 500)
    return driver


@pytest.fixture
def tokens(saga: Shop, fake_server: Any) -> dict[str, str]:
    connect = lambda: fakeredis.FakeAsyncRedis(server=fake_server, decode_responses=True)  # noqa: E731
    return {"operator": make_token(connect, "operator"),
            "alice": make_token(connect, "customer", "alice"),
            "bob": make_token(connect, "customer", "bob")}


@pytest.fixture
async def http(afake: redis.asyncio.Redis) -> AsyncIterator[httpx2.AsyncClient]:
    transport = httpx2.ASGITransport(app=api_app(afake))
    async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def api(http: httpx2.AsyncClient, tokens: dict[str, str]) -> ShopApi:
    """The API as alice's shop server calls it."""
    return ShopApi("http://testserver", tokens["alice"], http)


@pytest.fixture
def operator(http: httpx2.AsyncClient, tokens: dict[str, str]) -> ShopApi:
    """The API as the ops server calls it."""
    return ShopApi("http://testserver", tokens["operator"], http)


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    content = result.structured_content
    assert content is not None
    return content.get("result", content)


async def error(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error
    return result.content[0].text


async def test_the_shop_server_finds_orders_and_follows_an_order(
    api: ShopApi, saga: Shop
) -> None:
    async with Client(shop.create_server(api)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"find_products", "my_account", "place_order", "get_order",
                              "wait_for_order", "list_orders"}
        assert all(t.output_schema and t.description and t.title for t in tools.values())
        assert tools["place_order"].input_schema["properties"]["lines"]["description"]
        assert "customer_id" not in tools["place_order"].input_schema["properties"]

        found = await call(client, "find_products")
        assert [p["id"] for p in found["products"]] == ["item1", "item2"] and found["count"] == 2
        assert await call(client, "find_products", query="tea") == {"products": [], "count": 0}
        [cup] = (await call(client, "find_products", query="item2"))["products"]
        assert cup == {"id": "item2", "name": "Item2", "price_cents": 1200, "stock": 3}
        assert (await call(client, "my_account"))["balance_cents"] == 1_000_000

        order = await call(client, "place_order",
                           lines=[{"product_id": "item2", "quantity": 2}],
                           idempotency_key="agent-1")
        assert order["status"] == "pending" and order["total_cents"] == 2400
        assert order["customer_id"] == "alice"
        again = await call(client, "place_order",
                           lines=[{"product_id": "item2", "quantity": 2}],
                           idempotency_key="agent-1")
        assert again["id"] == order["id"]
        # Not final yet: the wait is bounded and says so.
        waited = await call(client, "wait_for_order", order_id=order["id"], timeout_s=0.2)
        assert waited["final"] is False and waited["order"]["status"] == "pending"
        assert 0.2 <= waited["waited_s"] < 1

        saga.settle()
        waited = await call(client, "wait_for_order", order_id=order["id"])
        assert waited["final"] is True and waited["order"]["status"] == "completed"
        got = await call(client, "get_order", order_id=order["id"])
        assert [h["type"] for h in got["history"]] == [
            "order.created", "payment.completed", "inventory.reserved"]
        page = await call(client, "list_orders", status="completed")
        assert [o["id"] for o in page["items"]] == [order["id"]] and page["total"] == 1

        resource = await client.read_resource(f"order://{order['id']}")
        assert json.loads(resource.contents[0].text)["status"] == "completed"
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["order://{order_id}"]

        prompt = await client.get_prompt("buy", {"wish": "a cup"})
        text = prompt.messages[0].content.text
        assert "find_products" in text and "wait_for_order" in text and "a cup" in text


async def test_bad_arguments_and_api_refusals_are_tool_errors_that_say_what_to_fix(
    api: ShopApi, saga: Shop
) -> None:
    async with Client(shop.create_server(api)) as client:
        assert await error(client, "place_order", lines=[
            {"product_id": "item2", "quantity": 0}]) == (
            "lines.0.quantity: Input should be greater than or equal to 1")  # one line
        assert "lines" in await error(client, "place_order", lines=[])
        assert "unknown product(s): 'tea'" in await error(
            client, "place_order", lines=[{"product_id": "tea", "quantity": 1}])
        # An agent cannot spend another customer's money: there is no argument for it.
        assert await error(client, "place_order", customer_id="bob", lines=[
            {"product_id": "item1", "quantity": 1}]) == (
            "unknown argument(s) customer_id: place_order takes idempotency_key, lines")
        assert "order 'ord_nope' not found" in await error(client, "get_order",
                                                          order_id="ord_nope")
        assert "timeout_s" in await error(client, "wait_for_order", order_id="x", timeout_s=60)
        assert "status" in await error(client, "list_orders", status="lost")
        with pytest.raises(Exception, match="order 'ord_nope' not found"):
            await client.read_resource("order://ord_nope")
        # The server is still there.
        assert (await call(client, "find_products"))["count"] == 2


@pytest.mark.parametrize("order_id", ["../customers/alice", "ord_1:history", "a/b", "..",
                                      "x" * 65])
async def test_ids_are_checked_by_the_id_rule_so_no_path_is_reached(
    api: ShopApi, saga: Shop, order_id: str
) -> None:
    async with Client(shop.create_server(api)) as client:
        message = await error(client, "get_order", order_id=order_id)
    assert message.startswith("order_id: String should match pattern"), message
    assert "alice@example.com" not in message


async def test_one_customer_reads_no_other_customers_orders(
    api: ShopApi, http: httpx2.AsyncClient, tokens: dict[str, str], saga: Shop
) -> None:
    async with Client(shop.create_server(api)) as alice:
        order = await call(alice, "place_order", lines=[{"product_id": "item1", "quantity": 1}])
    bob_api = ShopApi("http://testserver", tokens["bob"], http)
    async with Client(shop.create_server(bob_api)) as bob:
        assert f"order {order['id']!r} not found" in await error(bob, "get_order",
                                                               order_id=order["id"])
        assert (await call(bob, "list_orders"))["total"] == 0
        assert (await call(bob, "my_account"))["id"] == "bob"


async def test_place_order_always_sends_a_key_and_resends_an_unknown_outcome_with_it(
    afake: redis.asyncio.Redis, tokens: dict[str, str], saga: Shop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first answer is lost (504: the outcome is unknown, though the order was
    placed); the tool sends the order again with the same key and gets that one."""
    app = httpx2.ASGITransport(app=api_app(afake))
    sent: list[httpx2.Request] = []

    async def flaky(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        answer = await app.handle_async_request(request)
        if request.method == "POST" and len(sent) == 1:  # placed, but the answer is lost
            await answer.aread()
            return httpx2.Response(504, json={"detail": "outcome unknown"})
        return answer

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(flaky),
                                  base_url="http://testserver") as http:
        api = ShopApi("http://testserver", tokens["alice"], http)
        monkeypatch.setattr(shop, "RESENDS_AFTER_S", (0.01, 0.01, 0.01))
        async with Client(shop.create_server(api)) as client:
            order = await call(client, "place_order",
                               lines=[{"product_id": "item1", "quantity": 1}])
    keys_sent = [r.headers["idempotency-key"] for r in sent if r.method == "POST"]
    assert len(keys_sent) == 2 and keys_sent[0] == keys_sent[1]
    assert keys_sent[0].startswith("mcp-")
    assert saga.r.zcard(keys.orders_index()) == 1  # one order, not two
    assert order["id"] == saga.r.zrange(keys.orders_index(), 0, -1)[0]


async def test_an_unreachable_api_is_a_tool_error_naming_what_to_check() -> None:
    nowhere = ShopApi(f"http://127.0.0.1:{free_port()}", "shop_token")
    async with Client(shop.create_server(nowhere)) as client:
        message = await error(client, "find_products")
    assert "is unreachable" in message and "SHOP_API_URL" in message


async def test_the_ops_server_keeps_stock_and_watches_the_streams(
    operator: ShopApi, saga: Shop, afake: redis.asyncio.Redis
) -> None:
    async with Client(ops.create_server(operator)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {
            "stock_report", "restock", "add_product", "delete_product", "set_price",
            "stream_health", "list_dead_letters", "replay_dead_letters", "gateway_endpoints"}
        hints = {name: (t.annotations.read_only_hint, t.annotations.destructive_hint)
                 for name, t in tools.items() if t.annotations}
        assert hints["stock_report"] == (True, None) and hints["delete_product"] == (False, True)
        assert hints["restock"] == (False, False)
        report = await call(client, "stock_report", low_at=5)
        assert [p["id"] for p in report["products"]] == ["item2", "item1"]
        assert report["low"] == ["item2"]
        assert (await call(client, "restock", product_id="item2", quantity=10))["stock"] == 13
        added = await call(client, "add_product", name="Tea", price_cents=350, stock=2,
                           product_id="tea")
        assert added == {"id": "tea", "name": "Tea", "price_cents": 350, "stock": 2}
        assert (await call(client, "set_price", product_id="tea", price_cents=400))[
            "price_cents"] == 400
        assert (await call(client, "stock_report"))["low"] == ["tea"]

        health = await call(client, "stream_health")
        assert health["summary"] == "no consumer group yet: are the workers running?"
        await afake.xadd(topology.ORDERS_CREATED, {"hello": "world"})
        saga.settle()
        health = await call(client, "stream_health")
        assert (health["lag"], health["pending"], health["dead_letters"]) == (0, 0, 2)
        assert health["summary"] == "idle: every message handled; 2 dead letter(s): see " \
                                    "list_dead_letters"
        assert (await call(client, "list_dead_letters", stream="payments.failed")) == {
            "dead_letters": [], "count": 0}
        dead = (await call(client, "list_dead_letters", stream="orders.created"))[
            "dead_letters"]
        assert {d["group"] for d in dead} == {"payment", "order-status"}
        assert dead[0]["reason"].startswith("missing field(s): type")
        replayed = await call(client, "replay_dead_letters", refs=[d["ref"] for d in dead])
        assert sum("replayed as orders.created" in r for r in replayed["results"].values()) == 1

        assert (await call(client, "gateway_endpoints"))["summary"] == (
            "no gateway running (or none has reported in the last 30 s)")
        await afake.hset(keys.gateway_endpoints(), "webhooks/receiver", json.dumps(asdict(
            State("receiver", "http://127.0.0.1:9099/hooks", state="suspended",
                  failures=2, last_error="answered 503"))))
        reported = await call(client, "gateway_endpoints")
        assert reported["summary"] == "1 suspended: webhooks/receiver"
        assert reported["endpoints"][0]["last_error"] == "answered 503"

        assert "product 'nope' not found" in await error(client, "restock", product_id="nope",
                                                         quantity=1)
        assert "quantity" in await error(client, "restock", product_id="item1", quantity=0)
        assert "price_cents" in await error(client, "set_price", product_id="tea",
                                            price_cents=-1)
        assert "already" in await error(client, "add_product", name="Tea again",
                                        price_cents=1, product_id="tea")
        assert "refs.0: String should match pattern '^(orders\\.created|" in await error(
            client, "replay_dead_letters", refs=["junk"])
        assert "product_id: String should match" in await error(
            client, "restock", product_id="../ops/dead-letters/replay#", quantity=1)
        assert await call(client, "delete_product", product_id="tea") == "product tea deleted"
        assert "product 'tea' not found" in await error(client, "delete_product",
                                                        product_id="tea")


@pytest.mark.parametrize("module", [shop, ops])
async def test_every_argument_is_described_and_every_result_typed(module: Any) -> None:
    async with Client(module.create_server(ShopApi("http://shop"))) as client:
        for tool in (await client.list_tools()).tools:
            assert tool.description and tool.title, tool.name
            assert tool.annotations and tool.annotations.read_only_hint is not None, tool.name
            assert tool.input_schema["additionalProperties"] is False, tool.name
            assert tool.output_schema, f"{tool.name} has no output schema"
            assert tool.output_schema.get("type") == "object", tool.name
            for name, schema in tool.input_schema["properties"].items():
                assert schema.get("description"), f"{tool.name}.{name} has no description"
