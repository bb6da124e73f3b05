"""Two scripted agents meet through the shop, over stdio, exactly as an agent
host runs the servers: no language model, the same calls a model would make.

1. The ops agent reads the stock report and restocks item2 with a few units.
2. The shop agent, for Alice, places two orders for all of item2's stock but
   two units, before either settles: one completes, the other is refunded
   because the stock ran out under it.
3. The shop agent, for Bob, buys item1 until an order is declined for lack
   of money.
4. The ops agent sees item2 low, restocks it, and checks the streams.

Run it with ``shopctl scenario`` against a running shop (``make up``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mcp import Client, StdioServerParameters

RESTOCK_FIRST, RESTOCK_AFTER, LOW_AT = 3, 20, 5


@dataclass
class Outcome:
    statuses: dict[str, list[str]] = field(default_factory=dict)  # customer -> statuses
    restocked_to: int = 0
    health: str = ""

    @property
    def ok(self) -> bool:
        return "refunded" in self.statuses.get("alice", []) and "rejected" in self.statuses.get(
            "bob", [])


def server(module: str, api_url: str, token: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", module],
                                 env={"SHOP_API_URL": api_url, "SHOP_API_TOKEN": token})


class Agent:
    """One side of the conversation: calls tools and writes the transcript."""

    def __init__(self, name: str, client: Client, say: Callable[[str], None]) -> None:
        self.name, self.client, self.say = name, client, say

    async def call(self, tool: str, shown: str, **arguments: Any) -> Any:
        self.say(f"{self.name:<6}→ {tool}({shown})")
        result = await self.client.call_tool(tool, arguments)
        if result.is_error:
            raise RuntimeError(f"{tool} failed: {result.content[0].text}")  # type: ignore[union-attr]
        content = result.structured_content or {}
        return content.get("result", content)

    def tell(self, text: str) -> None:
        self.say(f"{self.name:<6}← {text}")


async def play(api_url: str, say: Callable[[str], None], tokens: dict[str, str]) -> Outcome:
    """Play the scenario; ``tokens``: an ``operator``'s, ``alice``'s and ``bob``'s."""
    outcome = Outcome()
    async with Client(server("mcp_servers.ops", api_url, tokens["operator"])) as ops_client, \
            Client(server("mcp_servers.shop", api_url, tokens["alice"])) as alice_client, \
            Client(server("mcp_servers.shop", api_url, tokens["bob"])) as bob_client:
        ops = Agent("ops", ops_client, say)
        report = await ops.call("stock_report", f"low_at={LOW_AT}", low_at=LOW_AT)
        ops.tell("; ".join(f"{p['id']} {p['name']}: {p['stock']}" for p in report["products"]))
        cup = await ops.call("restock", f"item2, {RESTOCK_FIRST}", product_id="item2",
                             quantity=RESTOCK_FIRST)
        ops.tell(f"item2 now has {cup['stock']} in stock")

        alice = Agent("alice", alice_client, say)
        outcome.statuses["alice"] = await buy_until(alice, "cup", "refunded")
        bob = Agent("bob", bob_client, say)
        outcome.statuses["bob"] = await buy_until(bob, "beans", "rejected")

        report = await ops.call("stock_report", f"low_at={LOW_AT}", low_at=LOW_AT)
        ops.tell(f"low: {', '.join(report['low']) or 'nothing'}")
        if "item2" in report["low"]:
            cup = await ops.call("restock", f"item2, {RESTOCK_AFTER}", product_id="item2",
                                 quantity=RESTOCK_AFTER)
            ops.tell(f"item2 now has {cup['stock']} in stock")
            outcome.restocked_to = cup["stock"]
        health = await ops.call("stream_health", "")
        ops.tell(health["summary"])
        outcome.health = health["summary"]
    return outcome


async def buy_until(agent: Agent, query: str, wanted: str) -> list[str]:
    """Buy the product the query finds until an order ends ``wanted`` (at most
    5 rounds); return every final status. For a refund, each round places two
    orders for all the stock but two units before either settles: two
    checkouts racing for the same units, as happens in a real shop."""
    statuses: list[str] = []
    for _ in range(5):
        [product, *_] = (await agent.call("find_products", f"{query!r}", query=query))[
            "products"]
        agent.tell(f"{product['id']} {product['name']}: {product['price_cents']} cents, "
                   f"{product['stock']} in stock")
        racing = wanted == "refunded"
        quantity = max(1, product["stock"] - 2) if racing else 1
        placed = []
        for _ in range(2 if racing else 1):
            order = await agent.call(
                "place_order", f"{product['id']} × {quantity}",
                lines=[{"product_id": product["id"], "quantity": quantity}],
            )
            agent.tell(f"{order['id']} {order['status']}, {order['total_cents']} cents")
            placed.append(order["id"])
        for order_id in placed:
            waited = await agent.call("wait_for_order", order_id, order_id=order_id)
            order = waited["order"]
            reason = f" ({order['reason']})" if order["reason"] else ""
            agent.tell(f"{order['id']} {order['status']}{reason}")
            statuses.append(order["status"])
        if any(status != "completed" for status in statuses):
            break  # the one wanted, or a surprise: stop either way
    return statuses
