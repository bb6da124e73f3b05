from __future__ import annotations

from fastapi import APIRouter

from order_api.auth import Caller
from order_api.schemas import TokenOut, answers

router = APIRouter(tags=["tokens"])


@router.get("/me", response_model=TokenOut, responses=answers(401))
async def me(caller: Caller) -> TokenOut:
    """Who the token is: its name, its role, and the customer it acts for."""
    return TokenOut(name=caller.name, role=caller.role, customer_id=caller.customer_id)
