"""Products and customers: the catalog the API owns (stock and balances
change later only in the workers' atomic steps).

Records are read and written through their redis-om models (``get``,
``all_pks``, ``save``, ``delete``). redis-om's ``save`` writes the whole
hash, so a create or an edit runs it inside an optimistic transaction
(WATCH the record, MULTI, ``save`` into the transaction, EXEC): a create
finds a taken id, and an edit that raced a worker's stock or balance change
is done again on the new record instead of writing the old stock back. On
a cluster the transaction runs on the master of the record's slot
(``connection.one_slot``): every key it touches is in that slot.
Restocking, and any other change of stock by an operator, is a Lua script on
the same hash, atomic with the workers' takes, that records the change in the
product's adjustments stream (``keys.adjustments``) in the same step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import redis.asyncio
from aredis_om import NotFoundError

from order_api.errors import Conflict, NotFound
from order_api.models import Customer, Product
from order_api.schemas import CustomerIn, ProductIn, ProductPatch
from shop import keys
from streams.connection import one_slot
from streams.envelope import new_id, utc_now
from streams.scripts import Script, evaluate
from streams.topology import Topology

# An operator's change of a product's stock (a restock is one), never below
# zero, recorded as an ``inventory.adjusted`` entry of the product's adjustments
# stream in the same step. KEYS: product, its adjustments stream.
# ARGV: stock field, delta, event id, product id, occurred at, reason, who, entries kept.
ADJUST = Script(
    "adjust_stock",
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local stock = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local new = stock + tonumber(ARGV[2])
if new < 0 then return {'short', stock} end
redis.call('HSET', KEYS[1], ARGV[1], new)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 'type', 'inventory.adjusted',
           'event_id', ARGV[3], 'product_id', ARGV[4], 'occurred_at', ARGV[5],
           'delta', ARGV[2], 'stock', new, 'reason', ARGV[6], 'by', ARGV[7])
return {'adjusted', new}
""",
)

# How many adjustments a product's stream keeps (about: trimmed as it goes).
ADJUSTMENTS_KEPT = 1000

Record = TypeVar("Record", Product, Customer)


async def add_product(r: redis.asyncio.Redis, body: ProductIn) -> Product:
    fields = body.model_dump(exclude={"id"})
    return await _create(r, Product(pk=body.id, **fields) if body.id else Product(**fields))


async def get_product(r: redis.asyncio.Redis, product_id: str) -> Product:
    return await _read(Product, product_id)


async def list_products(r: redis.asyncio.Redis, query: str | None = None) -> list[Product]:
    """Every product, by id; with ``query``, those whose id or name contains
    every word of it (case-insensitive)."""
    # all_pks is a SCAN over the catalog: fine for a shop's products, not for orders.
    pks = sorted([pk async for pk in await Product.all_pks()])
    found = await asyncio.gather(*(_maybe(Product, pk) for pk in pks))
    words = (query or "").lower().split()
    return [p for p in found if p and all(w in f"{p.pk} {p.name}".lower() for w in words)]


async def update_product(r: redis.asyncio.Redis, product_id: str, body: ProductPatch) -> Product:
    changes = body.model_dump(exclude_none=True)

    def change(product: Product) -> None:
        for name, value in changes.items():
            setattr(product, name, value)

    return await _edit(r, Product, product_id, change)


async def delete_product(r: redis.asyncio.Redis, product_id: str) -> None:
    """Take a product off the catalog. New orders for it are refused, and the
    inventory step rejects (so the payment worker refunds) an order placed
    before."""
    if not await Product.delete(product_id):
        raise NotFound(f"product {product_id!r} not found")


async def restock(r: redis.asyncio.Redis, product_id: str, quantity: int, by: str) -> Product:
    return await adjust(r, product_id, quantity, "restock", by)


async def adjust(r: redis.asyncio.Redis, product_id: str, delta: int, reason: str,
                 by: str) -> Product:
    """Change a product's stock by ``delta`` (never below zero: ``Conflict``),
    atomically with the workers' takes, and record it in the product's
    adjustments stream."""
    answer = await evaluate(r, ADJUST, [keys.product(product_id), keys.adjustments(product_id)], [
        keys.STOCK_FIELD, delta, new_id(), product_id, utc_now(), reason, by, ADJUSTMENTS_KEPT])
    if answer[0] == "missing":
        raise NotFound(f"product {product_id!r} not found")
    if answer[0] == "short":
        raise Conflict(f"product {product_id!r} has {answer[1]} in stock: a change of {delta} "
                       "would take it below zero")
    return await get_product(r, product_id)


async def add_customer(r: redis.asyncio.Redis, body: CustomerIn) -> Customer:
    fields = body.model_dump(exclude={"id"})
    return await _create(r, Customer(pk=body.id, **fields) if body.id else Customer(**fields))


async def get_customer(r: redis.asyncio.Redis, customer_id: str) -> Customer:
    return await _read(Customer, customer_id)


async def list_customers(
    r: redis.asyncio.Redis, topology: Topology, offset: int, limit: int
) -> tuple[list[Customer], int]:
    """A page of customers in id order, and how many there are: each
    partition's index read to ``offset + limit``, merged by id."""
    async with r.pipeline(transaction=False) as pipe:
        for tag in topology.tags():
            pipe.zcard(keys.customers_index(tag))
            pipe.zrange(keys.customers_index(tag), 0, offset + limit - 1)
        replies = await pipe.execute()
    ids = sorted(i for page in replies[1::2] for i in page)[offset : offset + limit]
    found = await asyncio.gather(*(_maybe(Customer, pk) for pk in ids))
    return [c for c in found if c], sum(replies[0::2])


async def index_customers(r: redis.asyncio.Redis, topology: Topology) -> int:
    """Put customers created before the index existed into it; returns how many
    were missing. Idempotent; the API runs it once at start."""
    added = 0
    async for key in r.scan_iter(keys.customer("*"), count=1000, _type="hash"):
        pk = key.removeprefix(keys.customer("")).split("{")[0]  # without its tag
        added += await r.zadd(keys.customers_index(Customer.tag_of(pk)), {pk: 0}, nx=True)
    return added


async def _create(r: redis.asyncio.Redis, record: Record) -> Record:
    """Write a new record; a taken id is a conflict, never an overwrite."""
    key = record.key()
    async with one_slot(r, key) as client, client.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(key)
            if await pipe.exists(key):
                what = type(record).__name__.lower()
                raise Conflict(f"{what} {record.pk!r} already exists; choose another id")
            pipe.multi()
            await record.save(pipeline=pipe)
            if isinstance(record, Customer):
                pk = str(record.pk)
                pipe.zadd(keys.customers_index(Customer.tag_of(pk)), {pk: 0})
            await pipe.execute()
        except redis.WatchError:  # the same id, created at this very moment
            what = type(record).__name__.lower()
            raise Conflict(f"{what} {record.pk!r} already exists; choose another id") from None
    return record


async def _edit(
    r: redis.asyncio.Redis, model: type[Record], pk: str, change: Callable[[Record], None]
) -> Record:
    """Read a record, change it and save it, done again if a worker changed the
    record meanwhile (its stock, a balance)."""
    key = model.make_primary_key(pk)
    while True:
        async with one_slot(r, key) as client, client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                record = await _read(model, pk)
                change(record)
                pipe.multi()
                await record.save(pipeline=pipe)
                await pipe.execute()
                return record
            except redis.WatchError:
                continue


async def _read(model: type[Record], pk: str) -> Record:
    try:
        return await model.get(pk)
    except NotFoundError:
        raise NotFound(f"{model.__name__.lower()} {pk!r} not found") from None


async def _maybe(model: type[Record], pk: str) -> Record | None:
    try:
        return await model.get(pk)
    except NotFoundError:  # deleted since it was listed
        return None
