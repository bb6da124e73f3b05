"""The ops MCP server, for an operations agent: keep the stock and the catalog,
watch the streams and consumer groups, replay dead letters.

Run it with ``ops-mcp`` or ``python -m mcp_servers.ops`` (stdio), or
``ops-mcp --http`` (streamable HTTP on 127.0.0.1:8102/mcp).
"""

from __future__ import annotations

import sys
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from mcp_servers import serve
from mcp_servers.api import ShopApi, path
from mcp_servers.settings import LogLevel
from mcp_servers.tools import StrictServer
from order_api.schemas import (
    DeadLetterOut,
    EndpointState,
    Id,
    PriceCents,
    ProductOut,
    ReplayOut,
    StreamHealth,
)

DEFAULT_PORT = 8102

INSTRUCTIONS = """\
Operations of a shop whose orders flow through Redis Streams: payment and
inventory workers react to events. Money is in integer cents. stock_report
shows what runs low; restock, add_product and set_price keep the catalog;
stream_health shows backlogs (lag: not yet read; pending: read, not yet
acknowledged) and dead letters (messages no worker could handle, or webhook
deliveries a gateway gave up on), which list_dead_letters explains and
replay_dead_letters retries once the cause is fixed. A replay is safe: the
workers never apply the same effect twice, and a webhook is sent again with
its idempotency key. gateway_endpoints shows which outside systems a gateway
cannot reach."""

ProductId = Annotated[Id, Field(description="The product's id, e.g. item2.")]
READ = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)


def change(*, idempotent: bool, destructive: bool = False) -> ToolAnnotations:
    return ToolAnnotations(read_only_hint=False, destructive_hint=destructive,
                           idempotent_hint=idempotent, open_world_hint=False)


class StockLine(ProductOut):
    low: bool = Field(description="Stock at or below the threshold asked for.")


class StockReport(BaseModel):
    products: list[StockLine] = Field(description="Lowest stock first.")
    low: list[str] = Field(description="Ids of the products at or below the threshold.")


class HealthReport(BaseModel):
    streams: list[StreamHealth]
    lag: int = Field(description="Messages not yet read, over every group.")
    pending: int = Field(description="Messages read and not yet acknowledged.")
    dead_letters: int
    summary: str


class Endpoints(BaseModel):
    endpoints: list[EndpointState]
    summary: str


class DeadLetters(BaseModel):
    dead_letters: list[DeadLetterOut] = Field(description="Newest first; may be empty.")
    count: int


def create_server(api: ShopApi, log_level: LogLevel = "WARNING") -> MCPServer:
    """The server, calling the order API through ``api``; logs go to stderr."""
    server = StrictServer("ops", instructions=INSTRUCTIONS, version="1.1.0",
                          log_level=log_level)

    @server.tool(title="Stock report", annotations=READ)
    async def stock_report(
        low_at: Annotated[int, Field(
            ge=0, le=1_000_000, description="A product with this many units or fewer is low.")]
        = 10,
    ) -> StockReport:
        """Every product with its stock, lowest first, flagging the low ones."""
        products = [ProductOut.model_validate(p) for p in await api.get("/products")]
        lines = sorted(
            (StockLine(**p.model_dump(), low=p.stock <= low_at) for p in products),
            key=lambda line: (line.stock, line.id),
        )
        return StockReport(products=lines, low=[line.id for line in lines if line.low])

    @server.tool(title="Restock a product", annotations=change(idempotent=False))
    async def restock(
        product_id: ProductId,
        quantity: Annotated[int, Field(ge=1, le=1_000_000, description="Units to add.")],
    ) -> ProductOut:
        """Add units to a product's stock (atomically; orders in flight are safe)."""
        return ProductOut.model_validate(
            await api.post(path("products", product_id, "restock"), {"quantity": quantity})
        )

    @server.tool(title="Add a product", annotations=change(idempotent=False))
    async def add_product(
        name: Annotated[str, Field(min_length=1, max_length=200,
                                   description="What customers see, e.g. Green tea, 100 g.")],
        price_cents: Annotated[PriceCents, Field(description="Price in integer cents.")],
        stock: Annotated[int, Field(ge=0, le=1_000_000_000,
                                    description="Units in stock to start with.")] = 0,
        product_id: Annotated[Id | None, Field(
            description="An id of your choice (e.g. item3); generated if left out.")] = None,
    ) -> ProductOut:
        """Add a product to the catalog."""
        body = {"name": name, "price_cents": price_cents, "stock": stock}
        if product_id is not None:
            body["id"] = product_id
        return ProductOut.model_validate(await api.post("/products", body))

    @server.tool(title="Take a product off the catalog",
                 annotations=change(idempotent=True, destructive=True))
    async def delete_product(product_id: ProductId) -> str:
        """Delete a product: new orders for it are refused, and an order already placed for
        it is rejected by the inventory step and refunded."""
        await api.delete(path("products", product_id))
        return f"product {product_id} deleted"

    @server.tool(title="Set a price", annotations=change(idempotent=True))
    async def set_price(
        product_id: ProductId,
        price_cents: Annotated[PriceCents, Field(description="New price in integer cents.")],
    ) -> ProductOut:
        """Change a product's price; orders already placed keep the price they were placed at."""
        return ProductOut.model_validate(
            await api.patch(path("products", product_id), {"price_cents": price_cents})
        )

    @server.tool(title="Stream health", annotations=READ)
    async def stream_health() -> HealthReport:
        """Each stream's length, its consumer groups' lag and pending messages, and its
        dead letters; with totals and a one-line summary."""
        streams = [StreamHealth.model_validate(s) for s in await api.get("/ops/streams")]
        groups = [g for s in streams for g in s.groups]
        lag = sum(g.lag or 0 for g in groups)
        pending = sum(g.pending for g in groups)
        dead = sum(s.dead_letters for s in streams)
        if not groups:
            summary = "no consumer group yet: are the workers running?"
        elif lag or pending:
            summary = f"busy: {lag} message(s) waiting to be read, {pending} being handled"
        else:
            summary = "idle: every message handled"
        if dead:
            summary += f"; {dead} dead letter(s): see list_dead_letters"
        return HealthReport(streams=streams, lag=lag, pending=pending, dead_letters=dead,
                            summary=summary)

    @server.tool(title="Gateway endpoints", annotations=READ)
    async def gateway_endpoints() -> Endpoints:
        """The endpoints the running gateways send to (webhook receivers, the shop for
        legacy clients): active or suspended, until when, after how many failures, the
        last error. A suspended endpoint is tried again when its suspension ends."""
        found = [EndpointState.model_validate(e) for e in await api.get("/ops/endpoints")]
        down = [f"{e.gateway}/{e.endpoint}" for e in found if e.state == "suspended"]
        summary = (f"{len(down)} suspended: {', '.join(down)}" if down else
                   f"{len(found)} endpoint(s), all active" if found else
                   "no gateway running (or none has reported in the last 30 s)")
        return Endpoints(endpoints=found, summary=summary)

    @server.tool(title="List dead letters", annotations=READ)
    async def list_dead_letters(
        stream: Annotated[str | None, Field(
            max_length=200, description="Only this stream's, e.g. orders.created.")] = None,
        limit: Annotated[int, Field(ge=1, le=1000, description="At most this many.")] = 20,
    ) -> DeadLetters:
        """Messages no worker could handle, newest first: the order, the group that gave
        up, how many times it was delivered and why."""
        found = await api.get("/ops/dead-letters", stream=stream, limit=limit)
        letters = [DeadLetterOut.model_validate(d) for d in found]
        return DeadLetters(dead_letters=letters, count=len(letters))

    @server.tool(title="Replay dead letters", annotations=change(idempotent=True))
    async def replay_dead_letters(
        refs: Annotated[list[Annotated[str, Field(max_length=200)]], Field(
            min_length=1, max_length=1000,
            description="Dead letters as list_dead_letters names them (ref).")],
    ) -> ReplayOut:
        """Put dead letters back on their streams, once their cause is fixed. Only what had
        not happened yet happens; the order then goes on to its final status."""
        return ReplayOut.model_validate(await api.post("/ops/dead-letters/replay",
                                                       {"refs": refs}))

    return server


def main(argv: list[str] | None = None) -> int:
    return serve.main("ops", DEFAULT_PORT, create_server, argv)


if __name__ == "__main__":
    sys.exit(main())
