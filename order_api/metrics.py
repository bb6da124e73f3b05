"""The API's metrics and its ``/metrics``: orders accepted and refused, with
the flow read from Redis as it is scraped (``streams.metrics``).

``/metrics`` asks for no token, as Prometheus expects of a target: it says
how many, never who or what (no order, customer or token in any label).
Keep it from the open internet as you keep the API's port (docs/operations.md).
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from order_api import ops
from shop.topology import with_gateway_stores
from streams.metrics import flow_families

ORDERS_ACCEPTED = Counter(
    "shop_orders_accepted", "Orders accepted (202 to POST /orders), each once: a request "
    "repeated with its Idempotency-Key is counted in shop_orders_replayed_total.")
ORDERS_REPLAYED = Counter(
    "shop_orders_replayed", "POST /orders answered with an order placed before (the same "
    "Idempotency-Key).")
ORDERS_REFUSED = Counter(
    "shop_orders_refused", "POST /orders refused, by reason (from its status code).",
    ["reason"])

REASONS = {400: "bad_request", 401: "unauthenticated", 403: "forbidden",
           404: "unknown_product_or_customer", 405: "method_not_allowed", 413: "too_large",
           415: "not_json", 422: "invalid", 429: "too_many_requests", 503: "unavailable",
           504: "outcome_unknown"}


class CountOrders:
    """ASGI in front of everything: counts POST /orders by its answer's status
    (the guard's refusals included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.refused = {status: ORDERS_REFUSED.labels(reason) for status, reason in
                        REASONS.items()}
        self.other = ORDERS_REFUSED.labels("error")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/orders" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 202:
                    replayed = any(name == b"idempotent-replayed"
                                   for name, _ in message.get("headers", ()))
                    (ORDERS_REPLAYED if replayed else ORDERS_ACCEPTED).inc()
                elif status >= 400:
                    self.refused.get(status, self.other).inc()
            await send(message)

        await self.app(scope, receive, counted)


class _Snapshot(Collector):
    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):  # type: ignore[no-untyped-def]
        return self.families


async def scrape(request: Request) -> Response:
    """This process's metrics, and the flow's as Redis holds it now: each
    stream's length and entries, each group's lag and pending, dead letters."""
    app = request.app
    topology = await with_gateway_stores(app.state.redis, app.state.topology)
    streams = await ops.streams(app.state.redis, topology)
    flow = CollectorRegistry(auto_describe=False)
    flow.register(_Snapshot(flow_families(streams, topology.split)))
    return Response(generate_latest(REGISTRY) + generate_latest(flow),
                    media_type="text/plain; version=0.0.4; charset=utf-8")
