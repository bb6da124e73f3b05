"""Every stream, consumer group and key name of the system, built in one place.

Keeping them here is what lets the project move to Redis Cluster later (hash
tags on the order id) by changing this module only. Nothing else writes a key
name as a string literal.
"""

from __future__ import annotations

# Streams. The defaults are the plain names of DESIGN.md so that
# `redis-cli XRANGE orders.created - +` works as the README says.
ORDERS_CREATED = "orders.created"
PAYMENTS_COMPLETED = "payments.completed"
PAYMENTS_FAILED = "payments.failed"
INVENTORY_RESERVED = "inventory.reserved"
INVENTORY_REJECTED = "inventory.rejected"
PAYMENTS_REFUNDED = "payments.refunded"

ALL_STREAMS = (
    ORDERS_CREATED,
    PAYMENTS_COMPLETED,
    PAYMENTS_FAILED,
    INVENTORY_RESERVED,
    INVENTORY_REJECTED,
    PAYMENTS_REFUNDED,
)

# What the benchmark's bare intake endpoint (shopctl bench) writes to: no group
# reads it, and it is capped.
BENCH_BASELINE = "bench.baseline"

# A message that could not be handled moves to "<stream>.dead", with the reason.
DEAD_SUFFIX = ".dead"

# Consumer groups: one per kind of worker; replicas share their group.
PAYMENT_GROUP = "payment"
INVENTORY_GROUP = "inventory"
ORDER_STATUS_GROUP = "order-status"

# Which groups read each stream (the table of DESIGN.md). A stream is trimmed
# only once every one of its groups exists and has handled what is trimmed,
# so a worker that has not started yet still finds its events.
READERS: dict[str, tuple[str, ...]] = {
    ORDERS_CREATED: (PAYMENT_GROUP, ORDER_STATUS_GROUP),
    PAYMENTS_COMPLETED: (INVENTORY_GROUP, ORDER_STATUS_GROUP),
    PAYMENTS_FAILED: (ORDER_STATUS_GROUP,),
    INVENTORY_RESERVED: (ORDER_STATUS_GROUP,),
    INVENTORY_REJECTED: (PAYMENT_GROUP, ORDER_STATUS_GROUP),
    PAYMENTS_REFUNDED: (ORDER_STATUS_GROUP,),
}

# Catalog records are redis-om hash models; these prefixes go into their Meta
# so that keys do not change when code moves ("shop:product:item1").
GLOBAL_PREFIX = "shop"
PRODUCT_PREFIX = "product"
CUSTOMER_PREFIX = "customer"

# Hash fields the workers change atomically in Lua; they must match the field
# names of the redis-om models (a test checks it).
STOCK_FIELD = "stock"
BALANCE_FIELD = "balance_cents"


def entry_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``1763700000000-0``) as something that sorts in stream order."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def dead(stream: str) -> str:
    """The dead-letter stream of ``stream``."""
    return stream + DEAD_SUFFIX


def is_dead(stream: str) -> bool:
    return stream.endswith(DEAD_SUFFIX)


def product(product_id: str) -> str:
    """Hash of one product (redis-om ``Product``): name, price_cents, stock."""
    return f"{GLOBAL_PREFIX}:{PRODUCT_PREFIX}:{product_id}"


def product_pattern() -> str:
    return f"{GLOBAL_PREFIX}:{PRODUCT_PREFIX}:*"


def customer(customer_id: str) -> str:
    """Hash of one customer (redis-om ``Customer``): name, email, balance_cents."""
    return f"{GLOBAL_PREFIX}:{CUSTOMER_PREFIX}:{customer_id}"


def order(order_id: str) -> str:
    """Hash of one order: customer, lines (JSON), total, status, reason, times."""
    return f"{GLOBAL_PREFIX}:order:{order_id}"


def order_history(order_id: str) -> str:
    """Hash event_id -> JSON of each event that touched the order. HSETNX on the
    event id is what makes the projector idempotent."""
    return f"{GLOBAL_PREFIX}:order:{order_id}:history"


def orders_index() -> str:
    """Sorted set of every order id, scored by creation time in milliseconds."""
    return f"{GLOBAL_PREFIX}:orders"


def orders_by_status_prefix() -> str:
    """Prefix of the per-status sorted sets; the status name is appended."""
    return f"{GLOBAL_PREFIX}:orders:status:"


def orders_by_status(status: str) -> str:
    return orders_by_status_prefix() + status


def customer_orders(customer_id: str) -> str:
    """Sorted set of one customer's order ids, scored by creation time."""
    return f"{GLOBAL_PREFIX}:orders:customer:{customer_id}"


def payment(order_id: str) -> str:
    """The payment worker's record for one order (charged, declined, refunded).
    Its existence is what makes a second delivery change nothing."""
    return f"{GLOBAL_PREFIX}:payment:{order_id}"


def reservation(order_id: str) -> str:
    """The inventory worker's record for one order (reserved or rejected)."""
    return f"{GLOBAL_PREFIX}:reservation:{order_id}"


def delivery_error(group: str, stream: str, entry_id: str) -> str:
    """The last error a group's handler raised for one entry, kept in Redis (with
    a TTL) so that whichever consumer gives up on the entry can name it."""
    return f"{GLOBAL_PREFIX}:error:{group}:{stream}:{entry_id}"


def idempotency(customer_id: str, key: str) -> str:
    """The order one customer placed with one ``Idempotency-Key`` (and its body's
    digest); expires. Scoped per customer: nobody can take another's keys."""
    return f"{GLOBAL_PREFIX}:idempotency:{customer_id}:{key}"


def token(token_id: str) -> str:
    """Hash of one API token: name, role, customer, the SHA-256 of its secret,
    times. Expires with the token."""
    return f"{GLOBAL_PREFIX}:token:{token_id}"


def token_names() -> str:
    """Hash token name -> token id: names are unique, for ``shopctl token list``
    and ``revoke``."""
    return f"{GLOBAL_PREFIX}:token-names"


def customers_index() -> str:
    """Sorted set of every customer id (score 0: in id order), for ``GET /customers``."""
    return f"{GLOBAL_PREFIX}:customers"
