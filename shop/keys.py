"""Every key name of the shop, built in one place.

A key that an atomic step touches ends with its partition's hash tag
(``shop:order:ord_5e2b...{p3}``), the tag of the stream the step reads and
publishes to; with one partition the tag is empty and the names are the plain
ones (``shop:order:ord_5e2b...``). ``docs/architecture.md`` maps every key to
its tag and the steps that touch it.

- An order and everything about it (history, payment, reservation, its
  indexes) lives in its customer's partition: ``tag`` is the order's.
- A product is in the slot of its own name, and so is every take of its
  stock (``take``, tagged with the product's key).
- Tokens live in partition 0.

Nothing else writes a key name as a string literal.
"""

from __future__ import annotations

# Catalog records are redis-om hash models; these prefixes go into their Meta
# so that keys do not change when code moves ("shop:product:item1").
GLOBAL_PREFIX = "shop"
PRODUCT_PREFIX = "product"
CUSTOMER_PREFIX = "customer"

# Hash fields the workers change atomically in Lua; they must match the field
# names of the redis-om models (a test checks it).
STOCK_FIELD = "stock"
BALANCE_FIELD = "balance_cents"


def product(product_id: str) -> str:
    """Hash of one product (redis-om ``Product``): name, price_cents, stock."""
    return f"{GLOBAL_PREFIX}:{PRODUCT_PREFIX}:{product_id}"


def take(product_id: str, order_id: str) -> str:
    """The inventory worker's record of one order's take of one product
    (taken, short, unknown; given back): in the product's slot, so that the
    take and its record are one atomic step."""
    return f"{GLOBAL_PREFIX}:take:{{{product(product_id)}}}:{order_id}"


def adjustments(product_id: str) -> str:
    """Stream of one product's stock adjustments by an operator (restocks
    included), one ``inventory.adjusted`` entry each, written with the change:
    in the product's slot."""
    return f"{GLOBAL_PREFIX}:adjustments:{{{product(product_id)}}}"


def customer(customer_id: str, tag: str = "") -> str:
    """Hash of one customer (redis-om ``Customer``): name, email, balance_cents."""
    return f"{GLOBAL_PREFIX}:{CUSTOMER_PREFIX}:{customer_id}{tag}"


def customers_index(tag: str = "") -> str:
    """Sorted set of one partition's customer ids (score 0: in id order)."""
    return f"{GLOBAL_PREFIX}:customers{tag}"


def order(order_id: str, tag: str = "") -> str:
    """Hash of one order: customer, lines (JSON), total, status, reason, times."""
    return f"{GLOBAL_PREFIX}:order:{order_id}{tag}"


def order_history(order_id: str, tag: str = "") -> str:
    """Hash event_id -> JSON of each event that touched the order. HSETNX on the
    event id is what makes the projector idempotent."""
    return f"{GLOBAL_PREFIX}:order:{order_id}:history{tag}"


def orders_index(tag: str = "") -> str:
    """Sorted set of one partition's order ids, scored by creation time in ms."""
    return f"{GLOBAL_PREFIX}:orders{tag}"


def orders_by_status(status: str, tag: str = "") -> str:
    """One partition's orders in one status, scored by creation time."""
    return f"{GLOBAL_PREFIX}:orders:status:{status}{tag}"


def customer_orders(customer_id: str, tag: str = "") -> str:
    """Sorted set of one customer's order ids, scored by creation time."""
    return f"{GLOBAL_PREFIX}:orders:customer:{customer_id}{tag}"


def payment(order_id: str, tag: str = "") -> str:
    """The payment worker's record for one order (charged, declined, refunded).
    Its existence is what makes a second delivery change nothing."""
    return f"{GLOBAL_PREFIX}:payment:{order_id}{tag}"


def reservation(order_id: str, tag: str = "") -> str:
    """The inventory worker's decision for one order (reserved or rejected):
    once written, a redelivery finds it and changes nothing."""
    return f"{GLOBAL_PREFIX}:reservation:{order_id}{tag}"


def idempotency(customer_id: str, key: str, tag: str = "") -> str:
    """The order one customer placed with one ``Idempotency-Key`` (and its body's
    digest); expires. Scoped per customer: nobody can take another's keys."""
    return f"{GLOBAL_PREFIX}:idempotency:{customer_id}:{key}{tag}"


def token(token_id: str, tag: str = "") -> str:
    """Hash of one API token: name, role, customer, the SHA-256 of its secret,
    times. Expires with the token."""
    return f"{GLOBAL_PREFIX}:token:{token_id}{tag}"


def token_names(tag: str = "") -> str:
    """Hash token name -> token id: names are unique, for ``shopctl token list``
    and ``revoke``."""
    return f"{GLOBAL_PREFIX}:token-names{tag}"


def gateway_endpoints() -> str:
    """Hash ``<gateway>/<endpoint>`` -> JSON of that endpoint's state (active or
    suspended, failures, last error), kept by each running gateway; expires
    when none refreshes it."""
    return f"{GLOBAL_PREFIX}:gateway:endpoints"


def gateway_stores() -> str:
    """Set of the gateways' message stores (``gateway.webhooks``): the dead-letter
    views list theirs with the shop's."""
    return f"{GLOBAL_PREFIX}:gateway:stores"


def throttle(gateway: str, key: str) -> str:
    """One token bucket of a gateway's ``throttle`` mediator."""
    return f"{GLOBAL_PREFIX}:gateway:throttle:{gateway}:{key}"


def delivery_attempts(store_stream: str) -> str:
    """Hash entry id -> attempts so far, of one store stream's deliveries (so
    that a restarted gateway goes on counting): in the stream's slot, its tag
    being the stream's own."""
    return f"{GLOBAL_PREFIX}:gateway:attempts:{store_stream}"


def store_seen(store_stream: str) -> str:
    """Sorted set of the message ids one store stream took in the last day
    (scored by when): a message is stored once, however often its event
    comes (the dead letters of one entry, one per group): in the stream's slot."""
    return f"{GLOBAL_PREFIX}:gateway:seen:{store_stream}"


def forwarder_lease(store_stream: str) -> str:
    """Which gateway forwards one store stream now (its id, with a TTL it
    renews): one at a time, so that its messages go out in order."""
    return f"{GLOBAL_PREFIX}:gateway:lease:{store_stream}"


# What the benchmark's bare intake endpoint (shopctl bench) writes to: no group
# reads it, and it is capped.
BENCH_BASELINE = "bench.baseline"
