"""The shop's choreography as the bus sees it, on one screen.

    order.created      -> payment charges           -> payment.completed | payment.failed
    payment.completed  -> inventory takes the stock -> inventory.reserved | inventory.rejected
    inventory.rejected -> payment refunds           -> payment.refunded

Every event is about one order (``order_id``) and goes to the order's
partition, which is its customer's: an order id carries its partition in its
bits, so anyone holding the id finds its keys without a lookup.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from typing import Any

from shop import events as e
from shop import keys
from streams.topology import DEAD_SUFFIX, EventType, Topology

# Streams: the plain names of the design, so that `redis-cli XRANGE
# orders.created - +` works with one partition.
ORDERS_CREATED = "orders.created"
PAYMENTS_COMPLETED = "payments.completed"
PAYMENTS_FAILED = "payments.failed"
INVENTORY_RESERVED = "inventory.reserved"
INVENTORY_REJECTED = "inventory.rejected"
PAYMENTS_REFUNDED = "payments.refunded"

# Consumer groups: one per kind of worker; replicas share their group.
PAYMENT_GROUP = "payment"
INVENTORY_GROUP = "inventory"
ORDER_STATUS_GROUP = "order-status"


def customer_partition(customer_id: str, partitions: int) -> int:
    """The partition a customer, and every order of theirs, lives in."""
    return zlib.crc32(customer_id.encode()) % partitions


def order_partition(order_id: str, partitions: int) -> int:
    """The partition an order lives in: its id's 64 bits (``ord_<16 hex>``),
    modulo the partition count. Another id is in no order's partition: it is
    looked up in the one its text hashes to, and found nowhere."""
    digits = order_id.removeprefix("ord_")
    try:
        return int(digits, 16) % partitions if len(digits) == 16 else _elsewhere(order_id,
                                                                                  partitions)
    except ValueError:
        return _elsewhere(order_id, partitions)


def _elsewhere(text: str, partitions: int) -> int:
    return zlib.crc32(text.encode()) % partitions


# The group that forwards a gateway's message store (one per store stream).
FORWARDER_GROUP = "forwarder"
# A gateway's message stores are streams named gateway.<store>.
STORE_PREFIX = "gateway."
STORE_NAME = r"[a-z0-9][a-z0-9-]{0,40}"


SHOP = Topology(
    name="shop",
    subject="order_id",
    partition_of=order_partition,
    events=(
        EventType("order.created", e.OrderCreated, ORDERS_CREATED),
        EventType("payment.completed", e.PaymentCompleted, PAYMENTS_COMPLETED),
        EventType("payment.failed", e.PaymentFailed, PAYMENTS_FAILED),
        EventType("inventory.reserved", e.InventoryReserved, INVENTORY_RESERVED),
        EventType("inventory.rejected", e.InventoryRejected, INVENTORY_REJECTED),
        EventType("payment.refunded", e.PaymentRefunded, PAYMENTS_REFUNDED),
    ),
    # Which groups read each stream. A stream is trimmed only once every one of
    # its groups exists and has handled what is trimmed.
    readers={
        ORDERS_CREATED: (PAYMENT_GROUP, ORDER_STATUS_GROUP),
        PAYMENTS_COMPLETED: (INVENTORY_GROUP, ORDER_STATUS_GROUP),
        PAYMENTS_FAILED: (ORDER_STATUS_GROUP,),
        INVENTORY_RESERVED: (ORDER_STATUS_GROUP,),
        INVENTORY_REJECTED: (PAYMENT_GROUP, ORDER_STATUS_GROUP),
        PAYMENTS_REFUNDED: (ORDER_STATUS_GROUP,),
    },
)


# Who writes each stream: the choreography's arrows (the dashboard draws them).
WRITERS = {
    ORDERS_CREATED: "api",
    PAYMENTS_COMPLETED: PAYMENT_GROUP,
    PAYMENTS_FAILED: PAYMENT_GROUP,
    INVENTORY_RESERVED: INVENTORY_GROUP,
    INVENTORY_REJECTED: INVENTORY_GROUP,
    PAYMENTS_REFUNDED: PAYMENT_GROUP,
}


async def with_gateway_stores(client: Any, topology: Topology,
                              named: Iterable[str] = ()) -> Topology:
    """The shop's topology with the message stores the gateways registered
    (``keys.gateway_stores``), and any store stream ``named`` (a store no
    gateway registered holds nothing, as a partition beyond the count does):
    their streams' health and dead letters are seen, replayed and purged
    with the shop's."""
    stores = set(await client.smembers(keys.gateway_stores()))
    for name in named:
        base = topology.split(name.split("/", 1)[0].removesuffix(DEAD_SUFFIX))[0]
        if re.fullmatch(re.escape(STORE_PREFIX) + STORE_NAME, base):
            stores.add(base)
    if not stores:
        return topology
    return topology.with_streams({store: (FORWARDER_GROUP,) for store in sorted(stores)})
