"""Catalog records: redis-om hash models with explicit key prefixes.

The models give the fields, their validation and the key of each record
(``shop:product:item1``). Reads and writes go through the process's own
client (``order_api.catalog``), not the client redis-om binds to a class when
it is defined, so ``REDIS_URL`` alone decides where data lives; changes that
must be atomic are Lua scripts on these same keys.
"""

from __future__ import annotations

from redis_om import HashModel

from streams import keys


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

    class Meta:
        global_key_prefix = keys.GLOBAL_PREFIX
        model_key_prefix = keys.CUSTOMER_PREFIX


def to_fields(record: HashModel) -> dict[str, str]:
    """The record as the string fields of its hash."""
    return {name: str(value) for name, value in record.model_dump().items()}
