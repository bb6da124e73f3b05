from __future__ import annotations

import json
import logging

import fakeredis
import pytest
import redis

from streams import middleware, tracing
from streams.logs import JsonFormatter, TextFormatter, with_trace
from tests.shop import Shop

pytestmark = pytest.mark.unit


def test_json_logs_carry_the_message_and_the_event_fields_in_utc() -> None:
    record = logging.makeLogRecord({
        "name": "streams.handled", "levelname": "INFO", "msg": "%s → %s",
        "args": ("charged", "payments.completed"), "created": 0.5,
        "order_id": "ord_1", "group": "payment",
    })
    entry = json.loads(JsonFormatter().format(record))
    assert entry == {
        "ts": "1970-01-01T00:00:00.500Z", "level": "INFO", "logger": "streams.handled",
        "message": "charged → payments.completed", "order_id": "ord_1", "group": "payment",
    }


def test_every_line_about_an_order_names_it_and_its_trace_in_text_and_in_json(
    fake: redis.Redis, fake_server: fakeredis.FakeServer,
) -> None:
    shop = Shop(fake, lambda: fakeredis.FakeAsyncRedis(server=fake_server,
                                                      decode_responses=True))
    shop.product("item1", 5, 2400)
    shop.customer("alice", 10_000)
    order_id = shop.order("alice", ("item1", 1))
    trace = tracing.parse(shop.entries("orders.created")[0][2]["traceparent"])
    assert trace is not None
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handled = logging.getLogger("streams.handled")
    for formatter in (TextFormatter(), JsonFormatter()):
        keep = Keep()
        keep.setFormatter(formatter)
        keep.addFilter(with_trace)
        handled.addHandler(keep)
        handled.setLevel(logging.INFO)
        try:
            shop.consumer("payment", name=f"logged-{type(formatter).__name__}",
                          middleware=middleware.DEFAULT).run(once=True)
        finally:
            handled.removeHandler(keep)
        # Delivered again for the next formatter: a duplicate, said about the order too.
        shop.r.xgroup_setid("orders.created", "payment", "0")
    text, as_json = lines[0], json.loads(lines[-1])
    assert f"order={order_id}" in text and text.endswith(f"trace={trace.trace_id}")
    assert as_json["order_id"] == order_id and as_json["trace_id"] == trace.trace_id
    shop.close()
