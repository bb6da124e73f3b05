from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from order_api import catalog
from order_api.deps import RedisDep
from order_api.models import Product
from order_api.schemas import ProductIn, ProductOut, ProductPatch, Restock

router = APIRouter(prefix="/products", tags=["products"])


def _out(product: Product) -> ProductOut:
    return ProductOut(
        id=product.pk, name=product.name, price_cents=product.price_cents, stock=product.stock
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ProductOut)
async def add_product(body: ProductIn, r: RedisDep) -> ProductOut:
    """Add a product to the catalog (409 if the id is taken)."""
    return _out(await catalog.add_product(r, body))


@router.get("", response_model=list[ProductOut])
async def list_products(
    r: RedisDep,
    q: Annotated[str | None, Query(max_length=200, description="Words in the id or name.")] = None,
) -> list[ProductOut]:
    """List products with price and stock; ``q`` keeps those whose id or name has every word."""
    return [_out(p) for p in await catalog.list_products(r, q)]


@router.get("/{product_id}", response_model=ProductOut)
async def get_product(product_id: str, r: RedisDep) -> ProductOut:
    """Get one product."""
    return _out(await catalog.get_product(r, product_id))


@router.patch("/{product_id}", response_model=ProductOut)
async def update_product(product_id: str, body: ProductPatch, r: RedisDep) -> ProductOut:
    """Change a product's name or price (orders already placed keep their price)."""
    return _out(await catalog.update_product(r, product_id, body))


@router.post("/{product_id}/restock", response_model=ProductOut)
async def restock(product_id: str, body: Restock, r: RedisDep) -> ProductOut:
    """Add stock, atomically."""
    return _out(await catalog.restock(r, product_id, body.quantity))
