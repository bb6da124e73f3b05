from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from order_api import orders
from order_api.deps import RedisDep
from order_api.errors import Unprocessable
from order_api.schemas import OrderIn, OrderOut, OrderPage, OrderStatus

router = APIRouter(prefix="/orders", tags=["orders"])


IDEMPOTENCY_KEY = re.compile(r"[!-~]{1,200}")

# The hot path of the whole system, so it parses its own body and header: FastAPI's
# generic machinery (dependency solving, json.loads then validation, re-validating
# the response) took as much CPU as the order itself. The OpenAPI description is the
# same as if FastAPI had parsed them (see order_api.main.openapi).
PLACE_ORDER_DOCS: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/OrderIn"}}}},
    "parameters": [{
        "name": "Idempotency-Key", "in": "header", "required": False,
        "description": "Send the same key again (for 24 h) to get the same order, not a "
        "second one; visible ASCII, up to 200 characters.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[!-~]+$"},
    }],
}


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=OrderOut,
             openapi_extra=PLACE_ORDER_DOCS)
async def place_order(request: Request) -> Response:
    """Accept an order: it is pending until the workers have handled it."""
    try:
        body = OrderIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(
            [error | {"loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from None
    key = request.headers.get("idempotency-key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise Unprocessable("header.Idempotency-Key: String should be 1 to 200 visible ASCII "
                            "characters (no spaces)")
    app = request.app
    order, replayed = await orders.place(app.state.redis, body, key,
                                         app.state.settings.idempotency_ttl_s)
    headers = {"Location": f"/orders/{order.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(order.model_dump_json(), status.HTTP_202_ACCEPTED, headers,
                    media_type="application/json")


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
