"""The gateway's metrics (served on its METRICS_PORT, with the bus's): its
deliveries and its endpoints. The endpoints' states are in the API's
``/metrics`` too (``gateway_endpoint_active``), read from Redis, for every
gateway at once."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DELIVERIES = Counter(
    "gateway_deliveries", "Deliveries of a store's messages, by outcome: delivered (a 2xx), "
    "failed (an attempt that will be made again), parked (given up on: a dead letter).",
    ["store", "outcome"])
ENDPOINT_REQUESTS = Counter(
    "gateway_endpoint_requests", "Requests an endpoint was sent, by result: answered (any "
    "status below 500) or failed (no answer, a timeout, a 5xx).", ["endpoint", "result"])
ENDPOINT_ACTIVE = Gauge(
    "gateway_endpoint_active", "1 while an endpoint is active, 0 while it is suspended after "
    "failures.", ["endpoint"])
