from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from order_api import catalog
from order_api.auth import Caller, Operator, own_customer
from order_api.deps import PathId, RedisDep, TopologyDep
from order_api.models import Customer
from order_api.schemas import CustomerIn, CustomerOut, CustomerPage, answers

router = APIRouter(prefix="/customers", tags=["customers"])


def _out(customer: Customer) -> CustomerOut:
    return CustomerOut(
        id=customer.pk, name=customer.name, email=customer.email,
        balance_cents=customer.balance_cents,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CustomerOut,
             responses=answers(401, 403, 409, 413, 415, 422))
async def add_customer(body: CustomerIn, r: RedisDep, _: Operator) -> CustomerOut:
    """Add a customer with an opening balance (operator; 409 if the id is taken)."""
    return _out(await catalog.add_customer(r, body))


@router.get("", response_model=CustomerPage, responses=answers(401, 403, 422))
async def list_customers(
    r: RedisDep,
    topology: TopologyDep,
    _: Operator,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> CustomerPage:
    """List customers by id, with their balances (operator)."""
    customers, total = await catalog.list_customers(r, topology, offset, limit)
    return CustomerPage(items=[_out(c) for c in customers], total=total, offset=offset,
                        limit=limit, next_offset=offset + limit if offset + limit < total
                        else None)


@router.get("/{customer_id}", response_model=CustomerOut, responses=answers(401, 403, 404, 422))
async def get_customer(customer_id: PathId, r: RedisDep, caller: Caller) -> CustomerOut:
    """Get one customer, with the current balance (a customer token: only its own)."""
    own_customer(caller, customer_id)
    return _out(await catalog.get_customer(r, customer_id))
