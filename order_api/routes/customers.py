from __future__ import annotations

from fastapi import APIRouter, status

from order_api import catalog
from order_api.deps import RedisDep
from order_api.models import Customer
from order_api.schemas import CustomerIn, CustomerOut

router = APIRouter(prefix="/customers", tags=["customers"])


def _out(customer: Customer) -> CustomerOut:
    return CustomerOut(
        id=customer.pk, name=customer.name, email=customer.email,
        balance_cents=customer.balance_cents,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CustomerOut)
async def add_customer(body: CustomerIn, r: RedisDep) -> CustomerOut:
    """Add a customer with an opening balance (409 if the id is taken)."""
    return _out(await catalog.add_customer(r, body))


@router.get("/{customer_id}", response_model=CustomerOut)
async def get_customer(customer_id: str, r: RedisDep) -> CustomerOut:
    """Get one customer, with the current balance."""
    return _out(await catalog.get_customer(r, customer_id))
