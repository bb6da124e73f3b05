"""Products and customers: the catalog the API owns (stock and balances
change later only in the workers' atomic steps)."""

from __future__ import annotations

from typing import TypeVar

import redis.asyncio

from order_api.errors import Conflict, NotFound
from order_api.models import Customer, Product, to_fields
from order_api.schemas import CustomerIn, ProductIn, ProductPatch
from streams import keys
from streams.scripts import Script, evaluate, pairs

# KEYS: the record, [an index the id joins]. ARGV: id, then field/value pairs.
CREATE = Script(
    "create_if_absent",
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local id = table.remove(ARGV, 1)
redis.call('HSET', KEYS[1], unpack(ARGV))
if KEYS[2] then redis.call('ZADD', KEYS[2], 0, id) end
return 1
""",
)

UPDATE = Script(
    "update_if_present",
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
""",
)

RESTOCK = Script(
    "restock",
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
""",
)


async def add_product(r: redis.asyncio.Redis, body: ProductIn) -> Product:
    fields = body.model_dump(exclude={"id"})
    return await _create(r, Product(pk=body.id, **fields) if body.id else Product(**fields))


async def get_product(r: redis.asyncio.Redis, product_id: str) -> Product:
    return await _read(r, Product, product_id)


async def list_products(r: redis.asyncio.Redis, query: str | None = None) -> list[Product]:
    """Every product, by id; with ``query``, those whose id or name contains
    every word of it (case-insensitive)."""
    # A SCAN over the catalog: fine for a shop's products, not for orders.
    product_keys = sorted([key async for key in r.scan_iter(keys.product_pattern(), count=500)])
    async with r.pipeline(transaction=False) as pipe:
        for key in product_keys:
            pipe.hgetall(key)
        found = await pipe.execute()
    products = [Product.model_validate(fields) for fields in found if fields]
    words = (query or "").lower().split()
    return [p for p in products if all(w in f"{p.pk} {p.name}".lower() for w in words)]


async def update_product(r: redis.asyncio.Redis, product_id: str, body: ProductPatch) -> Product:
    changes = {name: str(value) for name, value in body.model_dump(exclude_none=True).items()}
    if not await evaluate(r, UPDATE, [keys.product(product_id)], pairs(changes)):
        raise NotFound(f"product {product_id!r} not found")
    return await get_product(r, product_id)


async def delete_product(r: redis.asyncio.Redis, product_id: str) -> None:
    """Take a product off the catalog. The create-order script then refuses new
    orders for it, and the inventory step rejects (so the payment worker
    refunds) an order placed before."""
    if not await r.delete(keys.product(product_id)):
        raise NotFound(f"product {product_id!r} not found")


async def restock(r: redis.asyncio.Redis, product_id: str, quantity: int) -> Product:
    stock = await evaluate(r, RESTOCK, [keys.product(product_id)], [keys.STOCK_FIELD, quantity])
    if stock is None:
        raise NotFound(f"product {product_id!r} not found")
    return await get_product(r, product_id)


async def add_customer(r: redis.asyncio.Redis, body: CustomerIn) -> Customer:
    fields = body.model_dump(exclude={"id"})
    return await _create(r, Customer(pk=body.id, **fields) if body.id else Customer(**fields))


async def get_customer(r: redis.asyncio.Redis, customer_id: str) -> Customer:
    return await _read(r, Customer, customer_id)


async def list_customers(
    r: redis.asyncio.Redis, offset: int, limit: int
) -> tuple[list[Customer], int]:
    """A page of customers in id order, and how many there are."""
    async with r.pipeline(transaction=False) as pipe:
        pipe.zcard(keys.customers_index())
        pipe.zrange(keys.customers_index(), offset, offset + limit - 1)
        total, ids = await pipe.execute()
    async with r.pipeline(transaction=False) as pipe:
        for customer_id in ids:
            pipe.hgetall(keys.customer(customer_id))
        found = await pipe.execute()
    return [Customer.model_validate(fields) for fields in found if fields], total


async def index_customers(r: redis.asyncio.Redis) -> int:
    """Put customers created before the index existed into it; returns how many
    were missing. Idempotent; the API runs it once at start."""
    ids = [key.rsplit(":", 1)[1]
           async for key in r.scan_iter(keys.customer("*"), count=1000, _type="hash")]
    return await r.zadd(keys.customers_index(), dict.fromkeys(ids, 0), nx=True) if ids else 0


Record = TypeVar("Record", Product, Customer)


async def _create(r: redis.asyncio.Redis, record: Record) -> Record:
    """Write a new record; a taken id is a conflict, never an overwrite."""
    index: list[str] = [keys.customers_index()] if isinstance(record, Customer) else []
    fields: list[str] = pairs(to_fields(record))
    if not await evaluate(r, CREATE, [record.key(), *index], [record.pk, *fields]):
        what = type(record).__name__.lower()
        raise Conflict(f"{what} {record.pk!r} already exists; choose another id")
    return record


async def _read(r: redis.asyncio.Redis, model: type[Record], pk: str) -> Record:
    found = await r.hgetall(model.make_primary_key(pk))
    if not found:
        raise NotFound(f"{model.__name__.lower()} {pk!r} not found")
    return model.model_validate(found)
