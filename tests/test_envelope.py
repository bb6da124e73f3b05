from __future__ import annotations

import json
import time

import pytest

from order_api.models import Customer, Product
from shop import keys, topology
from shop.events import OrderCreated, OrderLine
from shop.topology import SHOP
from streams.deadletter import DeadLetter
from streams.envelope import Envelope, MalformedEntry, utc_now
from streams.topology import dead as dead_of

pytestmark = pytest.mark.unit


def order_created() -> Envelope:
    line = OrderLine(product_id="item1", quantity=2, price_cents=1200)
    return Envelope.new(
        SHOP, OrderCreated(customer_id="alice", lines=[line], total_cents=2400), "ord_1"
    )


def test_an_envelope_survives_the_round_trip_through_flat_string_fields() -> None:
    event = order_created()
    fields = event.to_fields(SHOP)
    assert list(fields) == ["type", "event_id", "order_id", "occurred_at", "causation_id", "v",
                            "traceparent", "data"]
    assert all(isinstance(v, str) for v in fields.values())
    assert fields["type"] == "order.created" and fields["v"] == "1"
    assert fields["occurred_at"].endswith("Z")
    assert Envelope.parse(fields, SHOP) == event


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"type": None}, "missing field(s): type"),
        ({"order_id": ""}, "missing field(s): order_id"),
        ({"type": "order.exploded"}, "unknown event type 'order.exploded'"),
        ({"v": "9"}, "unsupported schema version"),
        ({"data": "{not json"}, "bad data for order.created"),
        ({"data": json.dumps({"customer_id": "a", "lines": [], "total_cents": 1})},
         "lines: List should have at least 1 item"),
        ({"occurred_at": "yesterday"}, "occurred_at is not an ISO 8601 time"),
    ],
)
def test_a_malformed_entry_is_refused_with_a_reason(change: dict, reason: str) -> None:
    fields = order_created().to_fields(SHOP)
    for name, value in change.items():
        if value is None:
            del fields[name]
        else:
            fields[name] = value
    with pytest.raises(MalformedEntry, match=reason.replace("(", r"\(").replace(")", r"\)")):
        Envelope.parse(fields, SHOP)


def test_an_event_on_another_partition_than_its_order_is_refused() -> None:
    four = SHOP.with_partitions(4)
    event = order_created()
    order_id = "ord_0000000000000002"  # partition 2 of 4
    fields = event.to_fields(four) | {"order_id": order_id}
    assert Envelope.parse(fields, four, "{p2}").tag == "{p2}"
    with pytest.raises(MalformedEntry, match="belongs to partition {p2}, not {p1}"):
        Envelope.parse(fields, four, "{p1}")


def test_every_event_type_has_its_own_stream_and_every_stream_its_readers() -> None:
    streams = [event.stream for event in SHOP.events]
    assert sorted(streams) == sorted(topology.SHOP.streams)
    assert all(topology.SHOP.readers[stream] for stream in streams)


def test_keys_match_the_redis_om_models_and_their_fields() -> None:
    assert Product.make_primary_key("item1") == keys.product("item1") == "shop:product:item1"
    assert Customer.make_primary_key("alice") == keys.customer("alice")
    assert keys.STOCK_FIELD in Product.model_fields
    assert keys.BALANCE_FIELD in Customer.model_fields
    assert dead_of("orders.created") == "orders.created.dead"


def test_a_dead_letter_round_trips_and_keeps_the_original_fields() -> None:
    dead = DeadLetter.of("orders.created", "1-0", {"junk": "x", "order_id": "o"}, "payment",
                         "bad", 3, "order_id")
    fields = dead.to_fields("order_id")
    assert fields["type"] == "dead_letter" and fields["deliveries"] == "3"
    assert fields["order_id"] == "o"
    assert DeadLetter.parse(fields, "order_id") == dead
    with pytest.raises(MalformedEntry):
        DeadLetter.parse({"type": "order.created"}, "order_id")


@pytest.mark.parametrize(("ns", "text"), [
    (1_763_710_594_038_999_999, "2025-11-21T07:36:34.038Z"),
    (1_763_710_594_039_000_000, "2025-11-21T07:36:34.039Z"),  # the next millisecond
    (1_763_710_594_999_500_000, "2025-11-21T07:36:34.999Z"),  # never rounded up
    (1_763_710_595_000_000_000, "2025-11-21T07:36:35.000Z"),
    (1_763_710_595_000_000_001, "2025-11-21T07:36:35.000Z"),  # made once, given again
])
def test_utc_now_is_milliseconds_in_utc_with_a_z(
    monkeypatch: pytest.MonkeyPatch, ns: int, text: str,
) -> None:
    monkeypatch.setattr(time, "time_ns", lambda: ns)
    assert utc_now() == text
