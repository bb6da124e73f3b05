from __future__ import annotations

import json
import logging

import pytest

from streams.logs import JsonFormatter

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
