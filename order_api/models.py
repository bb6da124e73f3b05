"""Catalog records: redis-om hash models with explicit key prefixes.

The models give the fields, their validation, their encoding and the key of
each record (``shop:product:item1``; a customer's key carries its partition's
tag, ``shop:customer:alice{p2}``), and ``order_api.catalog`` reads and writes
them through redis-om (``get``, ``all_pks``, ``save``, ``delete``). ``bind``
points them at the process's own client at start, so ``REDIS_URL`` alone
decides where data lives. The changes that must be atomic with the workers'
(stock, balances) are Lua scripts on these same hashes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import redis.asyncio
from aredis_om import HashModel

from shop import keys
from shop.topology import SHOP, customer_partition
from streams.topology import Topology


class Product(HashModel, index=True):  # type: ignore[call-arg]  # redis-om's metaclass keyword
    name: str
    price_cents: int
    stock: int = 0

    class Meta:
        global_key_prefix = keys.GLOBAL_PREFIX
        model_key_prefix = keys.PRODUCT_PREFIX


class Customer(HashModel, index=True):  # type: ignore[call-arg]
    name: str
    email: str
    balance_cents: int

    # The partitions the process runs with: a customer lives in one of them.
    topology: ClassVar[Topology] = SHOP

    class Meta:
        global_key_prefix = keys.GLOBAL_PREFIX
        model_key_prefix = keys.CUSTOMER_PREFIX

    @classmethod
    def tag_of(cls, pk: str) -> str:
        return cls.topology.tag(customer_partition(pk, cls.topology.partitions))

    @classmethod
    def make_primary_key(cls, pk: Any) -> str:
        return keys.customer(pk, cls.tag_of(pk))


def bind(client: redis.asyncio.Redis, topology: Topology) -> None:
    """Point the models at the process's client and partitions (once, at start)."""
    for model in (Product, Customer):
        model._meta.database = client  # type: ignore[attr-defined]
    Customer.topology = topology


def to_fields(record: HashModel) -> dict[str, str]:
    """The record as the string fields of its hash."""
    return {name: str(value) for name, value in record.model_dump().items()}
