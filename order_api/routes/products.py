from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from order_api import catalog
from order_api.auth import Operator
from order_api.deps import PathId, RedisDep
from order_api.models import Product
from order_api.schemas import Adjustment, ProductIn, ProductOut, ProductPatch, Restock, answers

router = APIRouter(prefix="/products", tags=["products"])


def _out(product: Product) -> ProductOut:
    return ProductOut(
        id=product.pk, name=product.name, price_cents=product.price_cents, stock=product.stock
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ProductOut,
             responses=answers(401, 403, 409, 413, 415, 422))
async def add_product(body: ProductIn, r: RedisDep, _: Operator) -> ProductOut:
    """Add a product to the catalog (operator; 409 if the id is taken)."""
    return _out(await catalog.add_product(r, body))


@router.get("", response_model=list[ProductOut], responses=answers(422))
async def list_products(
    r: RedisDep,
    q: Annotated[str | None, Query(max_length=200, description="Words in the id or name.")] = None,
) -> list[ProductOut]:
    """List products with price and stock; ``q`` keeps those whose id or name has every word."""
    return [_out(p) for p in await catalog.list_products(r, q)]


@router.get("/{product_id}", response_model=ProductOut, responses=answers(404, 422))
async def get_product(product_id: PathId, r: RedisDep) -> ProductOut:
    """Get one product."""
    return _out(await catalog.get_product(r, product_id))


@router.patch("/{product_id}", response_model=ProductOut,
              responses=answers(401, 403, 404, 413, 415, 422))
async def update_product(
    product_id: PathId, body: ProductPatch, r: RedisDep, _: Operator
) -> ProductOut:
    """Change a product's name or price (operator; orders already placed keep their price)."""
    return _out(await catalog.update_product(r, product_id, body))


@router.delete("/{product_id}", status_code=status.HTTP_204_NO_CONTENT,
               response_class=Response, responses=answers(401, 403, 404, 422))
async def delete_product(product_id: PathId, r: RedisDep, _: Operator) -> Response:
    """Take a product off the catalog (operator): new orders for it are refused; one
    already placed is rejected by the inventory step and refunded."""
    await catalog.delete_product(r, product_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{product_id}/restock", response_model=ProductOut,
             responses=answers(401, 403, 404, 413, 415, 422))
async def restock(product_id: PathId, body: Restock, r: RedisDep,
                  who: Operator) -> ProductOut:
    """Add stock, atomically (operator); recorded as an adjustment."""
    return _out(await catalog.restock(r, product_id, body.quantity, who.name))


@router.post("/{product_id}/adjustments", response_model=ProductOut,
             responses=answers(401, 403, 404, 409, 413, 415, 422))
async def adjust(product_id: PathId, body: Adjustment, r: RedisDep,
                 who: Operator) -> ProductOut:
    """Add or take stock, atomically, never below zero (operator; 409 if it would
    be); recorded with the reason in the product's adjustments stream."""
    return _out(await catalog.adjust(r, product_id, body.delta, body.reason, who.name))
