"""Every event of the choreography, one small typed payload per event type.

Read top to bottom, this module is the whole flow:

    order.created      -> payment charges           -> payment.completed | payment.failed
    payment.completed  -> inventory takes the stock -> inventory.reserved | inventory.rejected
    inventory.rejected -> payment refunds           -> payment.refunded

Each payload travels as the ``data`` field of the flat envelope
(``streams.envelope``). Money is integer cents.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from streams import keys


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrderLine(Payload):
    product_id: str
    quantity: int = Field(ge=1)
    price_cents: int = Field(ge=0)


class OrderCreated(Payload):
    customer_id: str
    lines: list[OrderLine] = Field(min_length=1)
    total_cents: int = Field(ge=0)


class PaymentCompleted(Payload):
    customer_id: str
    amount_cents: int = Field(ge=0)
    # Carried on so that the inventory worker needs nobody else's data.
    lines: list[OrderLine] = Field(min_length=1)


class PaymentFailed(Payload):
    customer_id: str
    amount_cents: int = Field(ge=0)
    reason: Literal["insufficient_funds", "unknown_customer"]


class InventoryReserved(Payload):
    lines: list[OrderLine] = Field(min_length=1)


class InventoryRejected(Payload):
    # Carried on from payment.completed so that the refund needs no lookup.
    customer_id: str
    reason: Literal["out_of_stock", "unknown_product"]
    product_id: str
    requested: int
    available: int


class PaymentRefunded(Payload):
    customer_id: str
    amount_cents: int = Field(ge=0)
    reason: str


EventType = Literal[
    "order.created",
    "payment.completed",
    "payment.failed",
    "inventory.reserved",
    "inventory.rejected",
    "payment.refunded",
]

# event type -> (payload model, the one stream it is published on)
EVENTS: dict[str, tuple[type[Payload], str]] = {
    "order.created": (OrderCreated, keys.ORDERS_CREATED),
    "payment.completed": (PaymentCompleted, keys.PAYMENTS_COMPLETED),
    "payment.failed": (PaymentFailed, keys.PAYMENTS_FAILED),
    "inventory.reserved": (InventoryReserved, keys.INVENTORY_RESERVED),
    "inventory.rejected": (InventoryRejected, keys.INVENTORY_REJECTED),
    "payment.refunded": (PaymentRefunded, keys.PAYMENTS_REFUNDED),
}


def stream_of(event_type: str) -> str:
    """The stream an event type is published on."""
    return EVENTS[event_type][1]


_TYPE_OF = {model: name for name, (model, _stream) in EVENTS.items()}


def type_of(payload: Payload) -> str:
    """The event type name of a payload instance."""
    try:
        return _TYPE_OF[type(payload)]
    except KeyError:
        raise KeyError(f"{type(payload).__name__} is not a registered event payload") from None
