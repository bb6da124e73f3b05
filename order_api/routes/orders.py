from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from order_api import orders
from order_api.deps import RedisDep, SettingsDep
from order_api.schemas import OrderIn, OrderOut, OrderPage, OrderStatus

router = APIRouter(prefix="/orders", tags=["orders"])


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=OrderOut)
async def place_order(
    body: OrderIn,
    r: RedisDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[!-~]+$",
            description="Send the same key again (for 24 h) to get the same order, not a "
            "second one; visible ASCII, up to 200 characters.",
        ),
    ] = None,
) -> OrderOut:
    """Accept an order: it is pending until the workers have handled it."""
    order, replayed = await orders.place(r, body, idempotency_key, settings.idempotency_ttl_s)
    response.headers["Location"] = f"/orders/{order.id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return order


@router.get("", response_model=OrderPage)
async def list_orders(
    r: RedisDep,
    customer_id: str | None = None,
    status: OrderStatus | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> OrderPage:
    """List recent orders, newest first, by customer and status."""
    return await orders.page(r, customer_id, status, offset, limit)


@router.get("/{order_id}", response_model=OrderOut)
async def get_order(order_id: str, r: RedisDep) -> OrderOut:
    """Get an order: status, reason, lines, total and the history of its events."""
    return await orders.get(r, order_id)
