"""The projector's own metric: how long an order took from its POST to its
final status, the number a customer feels (``shop_order_settle_seconds``)."""

from __future__ import annotations

from collections.abc import Generator

from prometheus_client import Histogram

from shop.statuses import FINAL_STATUSES
from streams.delivery import Delivery

SETTLE_SECONDS = Histogram(
    "shop_order_settle_seconds", "From an order's POST (its created time) to the projector "
    "moving it to a final status, by that status.", ["status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))
_BY_STATUS = {status: SETTLE_SECONDS.labels(status) for status in FINAL_STATUSES}


def settle_time(delivery: Delivery) -> Generator[None, Delivery, None]:
    """Middleware: observe an order's settle time when its status became final."""
    yield
    match delivery.result:
        case ["moved", _, new, elapsed_ms] if new in _BY_STATUS:
            _BY_STATUS[new].observe(max(0, int(elapsed_ms)) / 1000)
