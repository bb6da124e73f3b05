"""The MCP servers as an agent host runs them, against the running system:
over stdio through the SDK's client, over streamable HTTP with a bearer
token, and the scripted two-agent scenario end to end."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import redis
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from shop import topology
from shopctl.redis_server import free_port
from streams.topology import dead as dead_of
from tests.running import Running

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


class System:
    def __init__(self, running: Running, api_url: str, redis_port: int) -> None:
        self.running, self.api_url, self.redis_port = running, api_url, redis_port

    def stdio(self, module: str, who: str) -> Client:
        return Client(StdioServerParameters(command=sys.executable, args=["-m", module], env={
            "SHOP_API_URL": self.api_url, "SHOP_API_TOKEN": self.running.token(who)}))


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    redis_port, api_port = free_port(), free_port()
    running = Running(tmp_path_factory.mktemp("mcp"), redis_port, api_port)
    try:
        running.wait_for("ready: API on")
        yield System(running, f"http://127.0.0.1:{api_port}", redis_port)
    finally:
        assert running.stop() == 0


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    content = result.structured_content or {}
    return content.get("result", content)


def test_every_shop_tool_over_stdio(system: System) -> None:
    async def session() -> None:
        async with system.stdio("mcp_servers.shop", "alice") as shop:
            [beans] = (await call(shop, "find_products", query="beans"))["products"]
            assert beans["id"] == "item1" and beans["price_cents"] == 2400
            assert (await call(shop, "my_account"))["id"] == "alice"
            order = await call(shop, "place_order",
                               lines=[{"product_id": "item1", "quantity": 1}])
            assert order["status"] == "pending"
            waited = await call(shop, "wait_for_order", order_id=order["id"])
            assert waited["final"] and waited["order"]["status"] == "completed"
            got = await call(shop, "get_order", order_id=order["id"])
            assert got["history"][-1]["type"] == "inventory.reserved"
            page = await call(shop, "list_orders")
            assert order["id"] in [o["id"] for o in page["items"]]
            resource = await shop.read_resource(f"order://{order['id']}")
            assert '"status": "completed"' in resource.contents[0].text
            prompt = await shop.get_prompt("buy", {"wish": "coffee"})
            assert "place_order" in prompt.messages[0].content.text
            bad = await shop.call_tool("place_order", {"lines": [
                {"product_id": "item1", "quantity": 10_001}]})
            assert bad.is_error and "quantity" in bad.content[0].text
            # Still serving after the bad call: stdout carried nothing but protocol.
            assert (await call(shop, "find_products"))["count"] >= 2

    anyio.run(session)


def test_every_ops_tool_over_stdio(system: System) -> None:
    r = redis.Redis(port=system.redis_port, decode_responses=True)
    r.xadd(topology.INVENTORY_RESERVED, {"hello": "world"})  # junk: the projector dead-letters it
    deadline = time.monotonic() + 10
    while not r.xlen(dead_of(topology.INVENTORY_RESERVED)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r.close()

    async def session() -> None:
        async with system.stdio("mcp_servers.ops", "operator") as ops:
            report = await call(ops, "stock_report", low_at=60)
            assert [p["stock"] for p in report["products"]] == sorted(
                p["stock"] for p in report["products"])
            added = await call(ops, "add_product", name="Green tea", price_cents=800, stock=4)
            assert added["id"] and added["stock"] == 4
            assert (await call(ops, "restock", product_id=added["id"], quantity=6))["stock"] == 10
            assert (await call(ops, "set_price", product_id=added["id"], price_cents=900))[
                "price_cents"] == 900
            health = await call(ops, "stream_health")
            assert health["dead_letters"] == 1 and "1 dead letter(s)" in health["summary"]
            [dead] = (await call(ops, "list_dead_letters"))["dead_letters"]
            assert dead["group"] == "order-status" and dead["stream"] == "inventory.reserved"
            results = await call(ops, "replay_dead_letters", refs=[dead["ref"]])
            assert results["results"][dead["ref"]].startswith("replayed as inventory.reserved")
            bad = await ops.call_tool("restock", {"product_id": "nope", "quantity": 1})
            assert bad.is_error and "product 'nope' not found" in bad.content[0].text

    anyio.run(session)


def test_the_scenario_plays_both_agents_end_to_end(system: System) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shopctl", "scenario", "--api-url", system.api_url,
         "--tokens", str(system.running.data_dir / "tokens")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "ops   → stock_report(low_at=5)"
    assert any(line.startswith("alice ← ") and " refunded (refunded: out of stock: item2"
               in line for line in lines)
    assert any(line.startswith("bob   ← ") and " rejected (payment declined: insufficient funds)"
               in line for line in lines)
    assert "ops   ← low: item2" in lines
    summary = lines[-1]
    assert summary.startswith("alice: completed, refunded; bob: rejected; item2 restocked to ")
    with httpx2.Client(base_url=system.api_url) as http:
        stock = http.get("/products/item2").json()["stock"]
    assert summary.startswith(f"alice: completed, refunded; bob: rejected; item2 restocked to "
                              f"{stock};")


def test_over_http_a_token_is_required_when_configured(system: System, tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcp_servers.ops", "--http", "--port", str(port)],
        env=os.environ | {"SHOP_API_URL": system.api_url, "MCP_TOKEN": "s3cret",
                          "SHOP_API_TOKEN": system.running.token("operator")},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                refused = httpx2.post(url, json={})
                break
            except httpx2.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert httpx2.post(url, json={}, headers={"Authorization": "Bearer wrong"}
                           ).status_code == 401

        async def session() -> str:
            http = httpx2.AsyncClient(headers={"Authorization": "Bearer s3cret"})
            async with http, Client(streamable_http_client(url, http_client=http)) as ops:
                return (await call(ops, "stream_health"))["summary"]

        assert anyio.run(session)
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=10)
    assert f"ops MCP server on http://127.0.0.1:{port}/mcp, bearer token required" in output


def test_over_http_a_server_will_not_bind_beyond_loopback_without_a_token(
    system: System,
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mcp_servers.shop", "--http", "--host", "0.0.0.0", "--port",
         str(free_port())],
        env={k: v for k, v in os.environ.items() if k != "MCP_TOKEN"} | {
            "SHOP_API_URL": system.api_url}, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "refusing to serve 0.0.0.0 without a token" in result.stderr
