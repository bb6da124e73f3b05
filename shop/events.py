"""Every event of the shop, one small typed payload per event type.

Read top to bottom, this module is the whole flow:

    order.created      -> payment charges           -> payment.completed | payment.failed
    payment.completed  -> inventory takes the stock -> inventory.reserved | inventory.rejected
    inventory.rejected -> payment refunds           -> payment.refunded

Each payload travels as the ``data`` field of the flat envelope
(``streams.envelope``); ``shop.topology`` says which stream each goes to.
Money is integer cents.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
