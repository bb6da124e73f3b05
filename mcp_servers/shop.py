"""The shop MCP server, for a shopping agent acting for one customer (its token,
SHOP_API_TOKEN, is that customer's): find products, place orders and follow
them to their final status.

Run it with ``shop-mcp`` or ``python -m mcp_servers.shop`` (stdio), or
``shop-mcp --http`` (streamable HTTP on 127.0.0.1:8101/mcp).
"""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from typing import Annotated

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from mcp_servers import serve
from mcp_servers.api import ApiError, ShopApi, path
from mcp_servers.settings import LogLevel
from mcp_servers.tools import StrictServer
from order_api.schemas import (
    ID_PATTERN,
    CustomerOut,
    Id,
    LineIn,
    OrderOut,
    OrderPage,
    OrderStatus,
    ProductOut,
    TokenOut,
)
from shop.statuses import FINAL_STATUSES

DEFAULT_PORT = 8101
WAIT_LIMIT_S = 10.0
# place_order sends an order again (same Idempotency-Key) after an unknown
# outcome or an outage, this many times, waiting this long before each.
RESENDS_AFTER_S = (0.5, 1.0, 2.0)

INSTRUCTIONS = """\
A shop whose orders are processed asynchronously, for one customer (this
server's token is theirs): placing an order returns at once with status
`pending`; payment and stock follow within moments. Money is in integer cents.
Final statuses: completed (paid, stock taken), rejected (payment declined),
refunded (paid, then refunded because stock was short), failed (a step could
not be handled; an operator can replay it).
Find products with find_products, order with place_order, then follow the
order with wait_for_order (or get_order); my_account shows the balance."""

OrderId = Annotated[Id, Field(description="The order's id, e.g. ord_88db353ea56effe3.")]
READ = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)


class ProductList(BaseModel):
    products: list[ProductOut] = Field(description="Matching products, by id; may be empty.")
    count: int


class WaitResult(BaseModel):
    order: OrderOut
    final: bool = Field(description="Whether the status is final; if not, wait again later.")
    waited_s: float


def create_server(api: ShopApi, log_level: LogLevel = "WARNING") -> MCPServer:
    """The server, calling the order API through ``api``; logs go to stderr."""
    server = StrictServer("shop", instructions=INSTRUCTIONS, version="1.1.0",
                          log_level=log_level)

    @server.tool(title="Find products", annotations=READ)
    async def find_products(
        query: Annotated[str, Field(
            max_length=200, description="Words that must all appear in the id or name; "
            "empty for every product.")] = "",
    ) -> ProductList:
        """List the products for sale with their price in cents and the units in stock."""
        found = [ProductOut.model_validate(p) for p in await api.get("/products",
                                                                     q=query or None)]
        return ProductList(products=found, count=len(found))

    @server.tool(title="My account", annotations=READ)
    async def my_account() -> CustomerOut:
        """The customer this server acts for, with the current balance in cents."""
        me = TokenOut.model_validate(await api.get("/me"))
        if me.customer_id is None:
            raise ApiError(403, "this server's token is not a customer's: give it a customer "
                                "token (shopctl token create --customer ID)")
        return CustomerOut.model_validate(await api.get(path("customers", me.customer_id)))

    @server.tool(title="Place an order", annotations=ToolAnnotations(
        read_only_hint=False, destructive_hint=False, idempotent_hint=False,
        open_world_hint=False))
    async def place_order(
        lines: Annotated[list[LineIn], Field(
            min_length=1, max_length=50,
            description="What to buy: product_id and quantity (1 to 10000) per line.")],
        idempotency_key: Annotated[str | None, Field(
            min_length=1, max_length=200, pattern=r"^[!-~]+$",
            description="Send the same key again to get the same order rather than a second "
            "one (for 24 h); one is made up when left out.")] = None,
    ) -> OrderOut:
        """Place an order for this customer. It returns at once with the order id and status
        pending; the payment and the stock follow within moments: then call wait_for_order.
        If the shop cannot say whether the order went through, it is sent again with the same
        idempotency key, so it is never placed twice."""
        body = {"lines": [line.model_dump() for line in lines]}
        headers = {"Idempotency-Key": idempotency_key or f"mcp-{uuid.uuid4().hex}"}
        for wait in RESENDS_AFTER_S:
            try:
                return OrderOut.model_validate(await api.post("/orders", body, headers))
            except ApiError as exc:
                if exc.status not in (503, 504):  # nothing was done, or it may have been
                    raise
            await anyio.sleep(wait)
        return OrderOut.model_validate(await api.post("/orders", body, headers))

    @server.tool(title="Get an order", annotations=READ)
    async def get_order(order_id: OrderId) -> OrderOut:
        """Get an order now: status, reason, lines, total and the history of its events."""
        return OrderOut.model_validate(await api.get(path("orders", order_id)))

    @server.tool(title="Wait for an order", annotations=READ)
    async def wait_for_order(
        order_id: OrderId,
        timeout_s: Annotated[float, Field(
            gt=0, le=WAIT_LIMIT_S,
            description=f"How long to wait at most, up to {WAIT_LIMIT_S:.0f} seconds.")] = 5.0,
    ) -> WaitResult:
        """Wait until an order reaches a final status (completed, rejected, refunded or
        failed), at most timeout_s seconds; return it as it is then."""
        started = time.monotonic()
        while True:
            order = OrderOut.model_validate(await api.get(path("orders", order_id)))
            waited = time.monotonic() - started
            if order.status in FINAL_STATUSES or waited >= timeout_s:
                return WaitResult(order=order, final=order.status in FINAL_STATUSES,
                                  waited_s=round(waited, 3))
            await anyio.sleep(min(0.05, timeout_s - waited))

    @server.tool(title="List my orders", annotations=READ)
    async def list_orders(
        status: Annotated[OrderStatus | None, Field(
            description="Only orders with this status.")] = None,
        limit: Annotated[int, Field(ge=1, le=100, description="At most this many.")] = 20,
    ) -> OrderPage:
        """This customer's orders, newest first."""
        return OrderPage.model_validate(await api.get("/orders", status=status, limit=limit))

    @server.resource("order://{order_id}", mime_type="application/json")
    async def order(order_id: str) -> str:
        """An order with its status and history, as JSON."""
        if not re.fullmatch(ID_PATTERN, order_id):
            raise ResourceNotFoundError(f"{order_id!r} is not an order id")
        try:
            return json.dumps(await api.get(path("orders", order_id)), indent=2)
        except ApiError as exc:
            if exc.status == 404:
                raise ResourceNotFoundError(str(exc)) from None
            raise

    @server.prompt()
    def buy(wish: Annotated[str, Field(description="What they want, in their words.")]) -> str:
        """Walk through buying something for the customer, from finding it to its final
        status."""
        return f"""\
You are buying for the customer this shop server acts for, who wants: {wish}

1. Call find_products with a word or two from the wish to see what matches,
   with prices (integer cents) and stock. If nothing matches, say so and stop.
2. Pick the product and quantity that fit the wish. If the stock is lower than
   the quantity, say so and ask whether fewer will do. my_account shows the
   balance.
3. Call place_order with the lines, and an idempotency_key of your choice,
   so that a retry cannot order twice.
4. Call wait_for_order with the order id. If `final` is false, call it again.
5. Tell the customer the outcome in plain words: completed (the total paid),
   rejected (the payment was declined: the reason), refunded (paid, then
   refunded because the stock ran out) or failed (an operator must look), and
   the order id. Read order://<id> for the full history if asked."""

    return server


def main(argv: list[str] | None = None) -> int:
    return serve.main("shop", DEFAULT_PORT, create_server, argv)


if __name__ == "__main__":
    sys.exit(main())
